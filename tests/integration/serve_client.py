"""dts_applier serve as a child process, and a small HTTP client for it: shared by serve_test.py
and serve_auth_test.py.

serve always needs a token. Serve(token=None) lets serve generate its own into its work
directory and reads it from there, as the jobs CLI does; Serve(token="...") gives it one with
--token-file; Serve(home=DIR) runs serve with HOME=DIR and no --work-dir, so that it uses its
default work directory DIR/.dts-serve.
"""
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request

from harness import APPLIER, Failure, check, tail_file, wait_for

TOKEN_FILE = "api-token"


class Serve:
    def __init__(self, state, port, *extra, token=None, home=None, tls=None):
        """`tls`: (certificate, key) PEM paths: serve speaks HTTPS, and the client trusts that
        certificate (self-signed, for 127.0.0.1)."""
        self.port, self.token, self.state, self.extra, self.home = port, token, state, extra, home
        self.tls = tls
        self.scheme = "https" if tls else "http"
        # The log and a given token file live beside the work directory, not in it: serve checks
        # what is in its work directory.
        self.base = home or tempfile.mkdtemp(prefix=f"dts-it-serve-{port}-")
        self.work = os.path.join(self.base, ".dts-serve") if home else os.path.join(self.base, "work")
        self.log_path = os.path.join(self.base, "serve.log")
        self.proc = None
        self.last_headers = {}
        self.generated = token is None
        self.start()

    def args(self):
        args = [APPLIER, "serve", "--listen", f"127.0.0.1:{self.port}", "--state", self.state, *self.extra]
        if not self.home:
            args += ["--work-dir", self.work]
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        if self.token:
            path = os.path.join(self.base, "token")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token + "\n")
            args += ["--token-file", path]
        return args

    def env(self):
        return dict(os.environ, HOME=self.home) if self.home else None

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=self.log, env=self.env())
        try:
            wait_for("serve to answer", lambda: self._alive() and self.call("GET", "/health", token=None)[0] == 200, 30)
            if self.generated:
                with open(os.path.join(self.work, TOKEN_FILE)) as f:
                    self.token = f.read().strip()
        except BaseException:
            self.cleanup()  # the caller gets no object to clean up
            raise

    def _alive(self):
        if self.proc.poll() is not None:
            raise Failure(f"serve exited with {self.proc.returncode}: {self.tail()}")
        return True

    def call(self, method, path, body=None, token="default", raw=None, headers=None, auth=None):
        """(status, parsed JSON or text); `auth` is a whole Authorization header, overriding `token`."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.scheme}://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        tok = self.token if token == "default" else token
        if auth is not None:
            req.add_header("Authorization", auth)
        elif tok:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            context = ssl.create_default_context(cafile=self.tls[0]) if self.tls else None
            with urllib.request.urlopen(req, timeout=60, context=context) as r:
                text, status, self.last_headers = r.read().decode(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            text, status, self.last_headers = e.read().decode(), e.code, dict(e.headers)
        except (urllib.error.URLError, ConnectionError):
            return 0, None
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def job(self, job_id):
        status, body = self.call("GET", f"/api/jobs/{job_id}")
        check(status == 200 and body["success"], f"GET job {job_id}: {status} {body}")
        return body["model"]

    def wait_status(self, job_id, wanted, timeout=180, seen=None):
        def reached():
            self._alive()
            m = self.job(job_id)
            if seen is not None and (not seen or seen[-1] != m["status"]):
                seen.append(m["status"])
            if m["status"] == "FAILED" and wanted != "FAILED":
                raise Failure(f"job {job_id} failed: {m['error']}")
            return m["status"] == wanted
        wait_for(f"job {job_id} to be {wanted}", reached, timeout)
        return self.job(job_id)

    def jobs_cli(self, *args, env=None):
        """`dts_applier jobs ...` against this serve, with no token flag unless `args` has one."""
        cmd = [APPLIER, "jobs", *args, "--server", f"{self.scheme}://127.0.0.1:{self.port}"]
        if self.tls and "--ca-file" not in args and "--no-ca" not in args:
            cmd += ["--ca-file", self.tls[0]]
        cmd = [c for c in cmd if c != "--no-ca"]
        if not self.home and "--token-file" not in args and "--work-dir" not in args:
            cmd += ["--work-dir", self.work]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env or self.env())

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def tail(self, n=20):
        return tail_file(self.log_path, n)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def self_signed(directory):
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def chromium_page(serve, fragment, shot=None):
    """The DOM of serve's status page after headless Chromium opened http://127.0.0.1:PORT/ with
    `fragment` (e.g. "#token=..."); a screenshot to `shot` if given."""
    chromium = shutil.which("chromium")
    check(chromium is not None, "chromium is not installed (scripts/install-deps.sh installs it)")
    url = f"{serve.scheme}://127.0.0.1:{serve.port}/{fragment}"
    profile = tempfile.mkdtemp(prefix="dts-it-chromium-")
    try:
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--window-size=1280,800"]
        if serve.tls:
            flags.append("--ignore-certificate-errors")  # a self-signed test certificate
        if shot:
            subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
        return subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
