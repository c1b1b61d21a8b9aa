#!/usr/bin/python3
"""serve always authenticates (issue 11, defect 10: a token-less serve let any local account
POST complete, which turns the source read-only, or cancel, which drops the slot).

Started without a token, serve generates one into its private work directory (0600 in 0700)
and reuses it; every route but GET /health refuses a request without it or with a wrong one,
in its family's envelope; the jobs CLI reads it with no flag; the status page signs in with it;
a work directory or token file other accounts can reach makes serve refuse to start; the token
never reaches the log.

Usage: serve_auth_test.py [test_name ...]
"""
import os
import re
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, Server, check, main, test, wait_for  # noqa: E402
from serve_client import TOKEN_FILE, Serve, chromium_page, self_signed  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_SERVE_AUTH_TEST_PORT", "26300"))
HTTP_PORT = BASE_PORT + 1
NOBODY = 65534


def routes(job_id, conninfo):
    """A few routes of each family: the job API (complete and cancel among them), the checks,
    metrics, the status page, the ShardingSphere routes, an unknown route and a POST to /health."""
    body = {"source": conninfo, "target": conninfo, "start": False}
    return [("GET", "/", None), ("GET", "/metrics", None), ("GET", "/api/jobs", None),
            ("GET", f"/api/jobs/{job_id}", None), ("POST", "/api/jobs", body),
            ("POST", "/api/check", {"source": conninfo, "target": conninfo}),
            *[("POST", f"/api/jobs/{job_id}/{a}", None) for a in ("start", "stop", "resume", "complete", "verify", "cancel")],
            ("GET", "/scaling/job/list", None), ("GET", f"/scaling/job/progress/{job_id}", None),
            ("POST", "/scaling/job/start", {"ruleConfiguration": {}}), ("POST", "/scaling/job/stop", {"jobId": job_id}),
            ("GET", "/api/nothing", None), ("POST", "/health", None)]


def refused(serve, method, path, body, auth, what):
    status, reply = serve.call(method, path, body, auth=auth) if auth is not None else \
        serve.call(method, path, body, token=None)
    check(status == 401 and isinstance(reply, dict) and reply.get("success") is False
          and reply.get("errorCode") == 40100 and reply.get("model") is None and what in (reply.get("errorMsg") or "")
          and serve.last_headers.get("WWW-Authenticate", "").startswith("Bearer"),
          f"{method} {path} with {auth!r}: expected 401/40100 with {what!r}, got {status} {reply}")


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@test
def serve_without_a_token_generates_one_and_every_route_but_health_needs_it():
    state = Server("it_sauth", BASE_PORT)
    serve = None
    try:
        home = tempfile.mkdtemp(prefix="dts-it-sauth-home-")
        serve = Serve(state.conninfo, HTTP_PORT, home=home)  # no --token-file, no --work-dir: ~/.dts-serve
        token_path = os.path.join(serve.work, TOKEN_FILE)
        st = os.lstat(token_path)
        check(stat.S_ISREG(st.st_mode) and mode(token_path) == 0o600 and st.st_uid == os.geteuid(),
              f"token file mode {mode(token_path):o}")
        check(mode(serve.work) == 0o700 and os.lstat(serve.work).st_uid == os.geteuid(),
              f"work dir mode {mode(serve.work):o}")
        check(re.fullmatch(r"[0-9a-f]{64}", serve.token), "the token is not 32 random bytes in hex")
        token = serve.token

        check(serve.call("GET", "/health", token=None)[0] == 200, "GET /health needs no token")
        status, body = serve.call("POST", "/api/jobs", {"source": state.conninfo, "target": state.conninfo, "start": False})
        check(status == 201, f"create with the token: {status} {body}")
        jid = body["model"]["id"]

        flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
        wrong = [(None, "needs its API token"), (f"Bearer {flipped}", "not valid"), (f"Bearer {token[:-1]}", "not valid"),
                 (f"Bearer {token}0", "not valid"), ("Bearer ", "not valid"), (token, "not valid"),
                 ("Basic " + token, "not valid")]
        for method, path, body in routes(jid, state.conninfo):
            for auth, what in wrong:
                refused(serve, method, path, body, auth, what)
        # Nothing the refused requests asked for happened.
        job = serve.job(jid)
        check(job["status"] == "PENDING" and not job["queued"] and not job["cancelled"] and job["verify"] is None,
              f"a refused request acted: {job}")
        check(len(serve.call("GET", "/api/jobs")[1]["model"]) == 1, "a refused request created a job")

        # A browser opening / without the token gets the sign-in page, not the status page.
        status, page = serve.call("GET", "/", token=None, headers={"Accept": "text/html,*/*"})
        check(status == 401 and serve.last_headers.get("Content-Type", "").startswith("text/html")
              and 'id="needs-token"' in page and 'id="jobs"' not in page, f"sign-in page: {status} {page[:300]}")

        # With the token (the scheme in any case) every family answers.
        status, page = serve.call("GET", "/", auth=f"bearer {token}")
        check(status == 200 and 'id="jobs"' in page, f"status page with the token: {status}")
        for path in ("/metrics", "/api/jobs", "/scaling/job/list", f"/scaling/job/progress/{jid}"):
            check(serve.call("GET", path)[0] == 200, f"GET {path} with the token")
        status, body = serve.call("POST", f"/api/jobs/{jid}/complete")
        check(status == 409 and body["errorCode"] == 40900, f"complete with the token reaches the job: {status} {body}")
        check(serve.call("POST", f"/api/jobs/{jid}/stop")[1]["model"]["status"] == "STOPPED", "stop with the token")
        check(serve.call("POST", f"/api/jobs/{jid}/cancel")[0] == 200, "cancel with the token")
        wait_for("the cancel to end", lambda: serve.job(jid)["cancelled"], 60)

        # The jobs CLI with no flag at all but --server: the token from ~/.dts-serve.
        out = serve.jobs_cli("list")
        check(out.returncode == 0 and re.search(rf"^{jid} +job {jid} +STOPPED", out.stdout, re.M),
              f"jobs list: {out.returncode} {out.stdout} {out.stderr}")
        out = serve.jobs_cli("show", str(jid))
        check(out.returncode == 0 and '"cancelled": true' in out.stdout, f"jobs show: {out.stdout} {out.stderr}")
        other_home = tempfile.mkdtemp(prefix="dts-it-sauth-other-")
        out = serve.jobs_cli("list", env=dict(os.environ, HOME=other_home))
        check(out.returncode == 2 and f"no API token at {other_home}/.dts-serve/{TOKEN_FILE}" in out.stderr,
              f"jobs without a token: {out.returncode} {out.stderr}")
        os.rmdir(other_home)
        out = subprocess.run([APPLIER, "jobs", "list", "--server", "http://192.0.2.1:9"], capture_output=True,
                             text=True, timeout=30, env=serve.env())
        check(out.returncode == 2 and "not a loopback address" in out.stderr,
              f"the local token went to another server: {out.returncode} {out.stderr}")

        # The status page in a browser: signed in by the fragment, or not.
        dom = chromium_page(serve, f"#token={token}")
        check(re.search(rf'<tr class="job" data-job-id="{jid}" data-status="STOPPED">', dom),
              f"status page with #token: {dom[:600]}")
        for fragment, what in [(f"#token={flipped}", "the token is not valid"), ("", 'id="needs-token"')]:
            dom = chromium_page(serve, fragment)
            check(what in dom and 'class="job"' not in dom, f"status page with {fragment[:8]!r}: {dom[:600]}")

        # A restart reuses the token.
        serve.stop()
        serve.start()
        check(serve.token == token and serve.call("GET", "/api/jobs")[0] == 200, "a restart changed the token")

        with open(serve.log_path) as f:
            log = f.read()
        check(token not in log and flipped not in log, "the token is in serve's log")
        check(f"the token in {token_path}" in log, f"the log does not say where the token is: {log[-600:]}")
        print(f"    {len(routes(jid, ''))} routes x {len(wrong)} missing or wrong tokens refused with 401")
    finally:
        if serve:
            serve.cleanup()
        state.destroy()


def start_serve(work, *extra, env=None):
    """serve with a --state nothing listens on: what it says before it would connect."""
    return subprocess.run([APPLIER, "serve", "--listen", f"127.0.0.1:{HTTP_PORT + 1}", "--state",
                           "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2", "--work-dir", work, *extra],
                          capture_output=True, text=True, timeout=60, env=env)


def write_token(path, text, perm):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, perm)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(path, perm)  # past the umask


@test
def serve_refuses_a_work_dir_or_token_file_that_other_accounts_can_reach():
    base = tempfile.mkdtemp(prefix="dts-it-sauth-perm-")
    secret = "5ecret" * 6
    try:
        def case(name):
            d = os.path.join(base, name)
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)
            return d

        def refuses(work, what, *extra):
            out = start_serve(work, *extra)
            check(out.returncode == 2 and what in out.stderr and secret not in out.stderr,
                  f"{work}: expected exit 2 with {what!r}, got {out.returncode}: {out.stderr[-400:]}")
            return out

        # The control: a private directory passes, the token is made, and serve goes on to --state.
        good = case("good")
        out = start_serve(good)
        check(out.returncode != 0 and "work-dir" not in out.stderr and os.path.exists(os.path.join(good, TOKEN_FILE))
              and mode(os.path.join(good, TOKEN_FILE)) == 0o600, f"control: {out.returncode} {out.stderr[-400:]}")
        nested = os.path.join(base, "new", "deeper", "work")
        out = start_serve(nested)
        check(mode(nested) == 0o700 and mode(os.path.join(nested, TOKEN_FILE)) == 0o600,
              f"a new work dir: {out.stderr[-300:]}")

        for perm in (0o755, 0o770, 0o701):
            d = case(f"dir{perm:o}")
            os.chmod(d, perm)
            refuses(d, f"is open to other accounts (mode 0{perm:o})")
            check(not os.path.exists(os.path.join(d, TOKEN_FILE)), "a token was written into an open directory")
        refuses(d, f"chmod 700 {d}")
        link = os.path.join(base, "dirlink")
        os.symlink(case("target"), link)
        refuses(link, "is a symlink")
        theirs = case("theirs")
        os.chown(theirs, NOBODY, NOBODY)
        refuses(theirs, "belongs to another user")

        for perm in (0o644, 0o640, 0o604, 0o660):
            d = case(f"token{perm:o}")
            write_token(os.path.join(d, TOKEN_FILE), secret, perm)
            refuses(d, f"{TOKEN_FILE} is open to other accounts (mode 0{perm:o})")
        out = subprocess.run([APPLIER, "jobs", "list", "--server", f"http://127.0.0.1:{HTTP_PORT + 1}", "--work-dir", d],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 2 and "is open to other accounts" in out.stderr and secret not in out.stderr,
              f"the jobs CLI read an open token file: {out.returncode} {out.stderr}")
        d = case("tokenlink")
        write_token(os.path.join(base, "elsewhere"), secret, 0o600)
        os.symlink(os.path.join(base, "elsewhere"), os.path.join(d, TOKEN_FILE))
        refuses(d, "is a symlink")
        d = case("tokentheirs")
        write_token(os.path.join(d, TOKEN_FILE), secret, 0o600)
        os.chown(os.path.join(d, TOKEN_FILE), NOBODY, NOBODY)
        refuses(d, "belongs to another user")
        d = case("tokenshort")
        write_token(os.path.join(d, TOKEN_FILE), "short", 0o600)
        refuses(d, "at least 16 printable characters")

        # A pre-existing private token is kept as it is.
        d = case("tokenkept")
        write_token(os.path.join(d, TOKEN_FILE), secret, 0o600)
        out = start_serve(d)
        with open(os.path.join(d, TOKEN_FILE)) as f:
            check(f.read().strip() == secret and "work-dir" not in out.stderr, f"the token was replaced: {out.stderr}")

        # A --token-file every account can read.
        given = os.path.join(base, "given-token")
        write_token(given, secret, 0o644)
        refuses(case("given"), "is open to every account on this host (mode 0644)", "--token-file", given)
    finally:
        subprocess.run(["rm", "-rf", base])


@test
def serve_speaks_https_with_a_certificate_and_the_jobs_cli_and_page_follow():
    """serve --tls-cert/--tls-key: the API over HTTPS (the token still required), plain HTTP
    refused on that port, the jobs CLI verifying the certificate (--ca-file; without it an
    unknown CA fails), the status page over HTTPS; bad TLS options refused before anything starts."""
    state = Server("it_sauth_tls", BASE_PORT + 5)
    serve = None
    tmp = tempfile.mkdtemp(prefix="dts-it-tls-")
    try:
        cert, key = self_signed(tmp)
        serve = Serve(state.conninfo, HTTP_PORT + 5, tls=(cert, key))
        check(serve.call("GET", "/health", token=None)[0] == 200, "GET /health over https")
        check(serve.call("GET", "/api/jobs", token=None)[0] == 401, "https without the token is not refused")
        status, body = serve.call("POST", "/api/jobs", {"source": state.conninfo, "target": state.conninfo, "start": False})
        check(status == 201, f"create over https: {status} {body}")
        serve.scheme, serve.tls = "http", None  # plain HTTP to the HTTPS port
        plain = serve.call("GET", "/health", token=None)
        serve.scheme, serve.tls = "https", (cert, key)
        check(plain[0] in (0, 400), f"plain HTTP on the HTTPS port answered {plain}")
        out = serve.jobs_cli("list")
        check(out.returncode == 0 and re.search(r"^1 ", out.stdout, re.M), f"jobs list over https: {out.stdout} {out.stderr}")
        out = serve.jobs_cli("list", "--no-ca")
        check(out.returncode != 0 and "certificate" in (out.stderr + out.stdout).lower(),
              f"the jobs CLI trusted an unknown certificate: {out.returncode} {out.stdout} {out.stderr}")
        dom = chromium_page(serve, f"#token={serve.token}")
        check('data-job-id="1"' in dom, f"the status page over https shows no job: {dom[:600]}")
        serve.cleanup()
        serve = None
        work = os.path.join(tmp, "work")
        for extra, words in (((["--tls-cert", cert]), "go together"),
                             ((["--tls-cert", cert, "--tls-key", cert]), "not a PEM certificate and its private key"),
                             ((["--tls-cert", os.path.join(tmp, "none.pem"), "--tls-key", key]), "cannot be read")):
            out = start_serve(work, *extra)
            check(out.returncode == 2 and words in out.stderr, f"{extra}: exit {out.returncode}: {out.stderr[-600:]}")
    finally:
        if serve:
            serve.cleanup()
        state.destroy()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main("serve_auth_test")
