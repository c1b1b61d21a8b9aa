#include "migrate/copier.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <thread>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "pg/connection.hpp"

namespace dts::migrate {

std::vector<Chunk> plan_chunks(const std::vector<TableToCopy>& tables, uint64_t split_pages) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < tables.size(); ++i) {
    uint64_t pages = tables[i].pages;
    if (split_pages == 0 || pages <= split_pages) {
      Chunk c;
      c.table = i;
      chunks.push_back(c);
      continue;
    }
    for (uint64_t first = 0; first < pages; first += split_pages) {
      Chunk c;
      c.table = i;
      c.first_page = first;
      // The last range is open-ended: pages added after the estimate are copied too.
      c.end_page = first + split_pages >= pages ? 0 : first + split_pages;
      chunks.push_back(c);
    }
  }
  return chunks;
}

namespace {

std::string column_list(const TableToCopy& t) {
  std::string cols;
  for (const auto& c : t.columns) cols += (cols.empty() ? "" : ", ") + apply::quote_ident(c);
  return cols;
}

std::string qualified(const TableToCopy& t) { return apply::quote_ident(t.schema) + "." + apply::quote_ident(t.name); }

}  // namespace

std::string chunk_read_sql(const TableToCopy& t, const Chunk& c) {
  // A table with no column to copy (none at all, or only generated ones) still has rows:
  // `SELECT FROM t` gives them as rows of zero fields, which binary COPY carries.
  std::string cols = column_list(t);
  std::string sql = "COPY (SELECT " + (cols.empty() ? "" : cols + " ") + "FROM ONLY " + qualified(t);
  bool whole = c.first_page == 0 && c.end_page == 0;
  if (!whole) {
    sql += " WHERE ctid >= '(" + std::to_string(c.first_page) + ",0)'::tid";
    if (c.end_page != 0) sql += " AND ctid < '(" + std::to_string(c.end_page) + ",0)'::tid";
  }
  return sql + ") TO STDOUT (FORMAT binary)";
}

std::string chunk_write_sql(const TableToCopy& t) {
  // `COPY t () FROM` is a syntax error: without a list COPY takes every column but the
  // generated ones, which is the same (empty) list.
  std::string cols = column_list(t);
  return "COPY " + qualified(t) + (cols.empty() ? "" : " (" + cols + ")") + " FROM STDIN (FORMAT binary)";
}

namespace {

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0;
  std::atomic<bool> stop{false};
  int finished = 0;
  std::exception_ptr error;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  std::vector<PGcancel*> cancels;  // of the workers' open connections, to cancel their queries
};

// A worker's connections in Shared::cancels while they are open: the calling thread cancels
// their queries when the copy must stop (PQcancel is safe from another thread).
class Cancellable {
 public:
  Cancellable(Shared& sh, const pg::Connection& src, const pg::Connection& dst) : sh_(sh) {
    std::lock_guard<std::mutex> lock(sh_.mu);
    for (const pg::Connection* c : {&src, &dst})
      if (PGcancel* k = PQgetCancel(c->get())) mine_.push_back(k), sh_.cancels.push_back(k);
  }
  ~Cancellable() {
    std::lock_guard<std::mutex> lock(sh_.mu);
    for (PGcancel* k : mine_) {
      sh_.cancels.erase(std::remove(sh_.cancels.begin(), sh_.cancels.end(), k), sh_.cancels.end());
      PQfreeCancel(k);
    }
  }
  Cancellable(const Cancellable&) = delete;
  Cancellable& operator=(const Cancellable&) = delete;

 private:
  Shared& sh_;
  std::vector<PGcancel*> mine_;
};

void copy_one(const pg::Connection& src, const pg::Connection& dst, const TableToCopy& t, Chunk& c,
              uint64_t& bytes, const std::atomic<bool>& stop) {
  dst.exec("BEGIN");
  pg::Result in(PQexec(dst.get(), chunk_write_sql(t).c_str()));
  if (PQresultStatus(in.get()) != PGRES_COPY_IN)
    throw Error(ErrorKind::kApply, "the target refused COPY into " + qualified(t) + ": " +
                                       std::string(PQresultErrorMessage(in.get())));
  pg::Result out(PQexec(src.get(), chunk_read_sql(t, c).c_str()));
  if (PQresultStatus(out.get()) != PGRES_COPY_OUT)
    throw Error(ErrorKind::kSource, "the source refused to copy " + qualified(t) + ": " +
                                        std::string(PQresultErrorMessage(out.get())));
  char* buf = nullptr;
  int len;
  while ((len = PQgetCopyData(src.get(), &buf, 0)) > 0) {
    if (stop.load()) {
      // Abandoned: the target rolls the chunk back (its transaction never commits).
      PQfreemem(buf);
      PQputCopyEnd(dst.get(), "migrate is stopping");
      throw Stopped("the copy of " + qualified(t) + " was stopped");
    }
    int ok = PQputCopyData(dst.get(), buf, len);
    PQfreemem(buf);
    if (ok != 1) throw Error(ErrorKind::kConnection, "lost the target while copying " + qualified(t));
    bytes += static_cast<uint64_t>(len);
    c.bytes += static_cast<uint64_t>(len);
  }
  if (len == -2) throw Error(ErrorKind::kConnection, "lost the source while copying " + qualified(t));
  pg::Result src_done(PQgetResult(src.get()));
  if (PQresultStatus(src_done.get()) != PGRES_COMMAND_OK)
    throw Error(ErrorKind::kSource, "copying " + qualified(t) + " from the source failed: " +
                                        std::string(PQresultErrorMessage(src_done.get())));
  while (PGresult* r = PQgetResult(src.get())) PQclear(r);
  if (PQputCopyEnd(dst.get(), nullptr) != 1) throw Error(ErrorKind::kConnection, "lost the target copying " + qualified(t));
  pg::Result dst_done(PQgetResult(dst.get()));
  if (PQresultStatus(dst_done.get()) != PGRES_COMMAND_OK)
    throw Error(ErrorKind::kApply, "the target rejected the data of " + qualified(t) + ": " +
                                       std::string(PQresultErrorMessage(dst_done.get())));
  c.rows = std::strtoull(PQcmdTuples(dst_done.get()), nullptr, 10);
  while (PGresult* r = PQgetResult(dst.get())) PQclear(r);
  // One target transaction per chunk: a chunk is all there or not at all.
  dst.exec("COMMIT");
  c.done = true;
}

void worker(const std::string& source, const std::string& target, const std::string& snapshot,
            const std::vector<TableToCopy>& tables, std::vector<Chunk>& chunks, Shared& sh) {
  try {
    pg::Connection src = pg::Connection::open(source, "source");
    src.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    src.exec("SET TRANSACTION SNAPSHOT " + apply::quote_literal(snapshot));
    pg::Connection dst = pg::Connection::open(target, "target");
    dst.exec("SET session_replication_role = replica");
    dst.exec("SET synchronous_commit = off");
    Cancellable cancellable(sh, src, dst);
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(sh.mu);
        if (sh.stop || sh.next >= chunks.size()) {
          sh.finished++;
          sh.cv.notify_all();
          return;
        }
        i = sh.next++;
      }
      uint64_t bytes = 0;
      copy_one(src, dst, tables[chunks[i].table], chunks[i], bytes, sh.stop);
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.rows += chunks[i].rows;
      sh.bytes += bytes;
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.finished++;
    sh.cv.notify_all();
    if (!sh.error) sh.error = std::current_exception();
    sh.stop = true;
  }
}

}  // namespace

CopyResult copy_chunks(const std::string& source, const std::string& target, const std::string& snapshot,
                       const std::vector<TableToCopy>& tables, std::vector<Chunk>& chunks, int jobs,
                       const std::function<void()>& report, const StopCheck& should_stop) {
  using Clock = std::chrono::steady_clock;
  Shared sh;
  jobs = std::max(1, jobs);
  std::vector<std::thread> threads;
  // No exception may leave here while a worker runs: a joinable std::thread destroyed by the
  // unwinding calls std::terminate. Errors stop the workers, which are joined, then rethrown.
  std::exception_ptr own_error;
  try {
    for (int j = 0; j < jobs; ++j)
      threads.emplace_back(worker, std::cref(source), std::cref(target), std::cref(snapshot), std::cref(tables),
                           std::ref(chunks), std::ref(sh));
  } catch (...) {  // a thread could not be started
    own_error = std::current_exception();
  }
  bool stopping = false;
  auto last_report = Clock::now();
  Clock::time_point last_cancel;
  {
    std::unique_lock<std::mutex> lock(sh.mu);
    if (own_error) sh.stop = true;
    while (sh.finished < static_cast<int>(threads.size())) {
      sh.cv.wait_for(lock, std::chrono::milliseconds(100));
      if (!stopping && should_stop) {
        lock.unlock();
        stopping = should_stop();
        lock.lock();
        if (stopping) sh.stop = true;
      }
      // Again every second: a cancel that arrives between two statements cancels nothing.
      if (stopping && Clock::now() - last_cancel >= std::chrono::seconds(1)) {
        char err[256];
        for (PGcancel* k : sh.cancels) PQcancel(k, err, sizeof(err));
        last_cancel = Clock::now();
      }
      if (report && !stopping && !own_error && Clock::now() - last_report >= std::chrono::milliseconds(500)) {
        lock.unlock();
        try {
          report();
        } catch (...) {
          own_error = std::current_exception();
        }
        lock.lock();
        if (own_error) sh.stop = true;  // each worker ends after its chunk
        last_report = Clock::now();
      }
    }
  }
  for (auto& t : threads) t.join();
  // The workers' errors are then those of their cancelled queries: not worth a word.
  if (stopping) throw Stopped("the copy was stopped");
  if (sh.error) std::rethrow_exception(sh.error);
  if (own_error) std::rethrow_exception(own_error);
  return CopyResult{sh.rows, sh.bytes};
}

}  // namespace dts::migrate
