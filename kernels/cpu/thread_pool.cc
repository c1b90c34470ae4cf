#include "thread_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "simd.h"

namespace glance {

namespace {

inline void cpu_relax() {
#if GLANCE_X86
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long a worker spins for the next job before it sleeps (GLANCE_SPIN_US overrides).
int64_t spin_ns() {
  static const int64_t ns = [] {
    const char* e = std::getenv("GLANCE_SPIN_US");
    if (e != nullptr) {
      const long v = std::atol(e);
      if (v >= 0) return static_cast<int64_t>(v) * 1000;
    }
    return static_cast<int64_t>(200 * 1000);
  }();
  return ns;
}

thread_local bool t_in_job = false;

class Pool {
 public:
  explicit Pool(int n) { start(n); }

  int threads() const { return threads_; }

  void resize(int n) {
    std::lock_guard<std::mutex> busy(run_mutex_);
    stop();
    start(n);
  }

  void run(int64_t n, ChunkFn fn, void* ctx, int max_threads) {
    int P = threads_;
    if (max_threads > 0 && max_threads < P) P = max_threads;
    if (n < P) P = static_cast<int>(n);
    if (P <= 1 || t_in_job) {
      fn(ctx, 0, n);
      return;
    }
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another thread owns the pool: do it alone
      fn(ctx, 0, n);
      return;
    }
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    pending_.store(P, std::memory_order_relaxed);
    const uint64_t g = next_generation(P);
    claim_.store(serial_of(g) << 32, std::memory_order_release);
    generation_.store(g, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(mutex_);
      cv_.notify_all();
    }
    // The caller runs chunks too, and takes over any chunk no worker has claimed yet: a worker that the OS has not
    // scheduled (another process busy on its core) then costs nothing instead of a scheduler time slice.
    t_in_job = true;
    run_chunks(serial_of(g), P);
    t_in_job = false;
    int spins = 0;
    while (pending_.load(std::memory_order_acquire) != 0) {
      cpu_relax();
      if (++spins > 20000) std::this_thread::yield();  // a worker was descheduled
    }
  }

 private:
  // The generation word carries the job's thread count in its low 16 bits, so that a worker reads the counter
  // and whether it takes part in one atomic load (a worker left out never touches the job fields, which the
  // next job may already be rewriting).
  uint64_t next_generation(int active) const {
    const uint64_t g = generation_.load(std::memory_order_relaxed);
    return (((g >> 16) + 1) << 16) | static_cast<uint64_t>(active);
  }
  void publish(int active) { generation_.store(next_generation(active), std::memory_order_seq_cst); }
  static uint64_t serial_of(uint64_t g) { return (g >> 16) & 0xffffffffu; }

  // Runs chunks of the job with this serial (P chunks) until none is left to claim. Chunk c = [n*c/P, n*(c+1)/P).
  void run_chunks(uint64_t serial, int64_t P) {
    uint64_t cur = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((cur >> 32) != serial) return;  // a later job (this one is finished)
      const uint64_t c = cur & 0xffffffffu;
      if (static_cast<int64_t>(c) >= P) return;
      if (!claim_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      // The claim holds the job open (pending_ > 0), so its fields stay those of this serial.
      const int64_t b = n_ * static_cast<int64_t>(c) / P;
      const int64_t e = n_ * (static_cast<int64_t>(c) + 1) / P;
      if (b < e) fn_(ctx_, b, e);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
      cur = claim_.load(std::memory_order_acquire);
    }
  }

  void start(int n) {
    threads_ = n < 1 ? 1 : n;
    quit_.store(false);
    // The generation a worker starts from is taken here, not in the new thread: a job published before the
    // thread gets to run must still be seen as new.
    const uint64_t g0 = generation_.load(std::memory_order_seq_cst);
    for (int i = 1; i < threads_; i++) workers_.emplace_back([this, i, g0] { worker(i, g0); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      quit_.store(true, std::memory_order_seq_cst);
      publish(0);
      cv_.notify_all();
    }
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void worker(int id, uint64_t seen) {
    t_in_job = true;  // nested parallel_for inside a job runs inline
    for (;;) {
      // Spin, then sleep, until the generation moves.
      uint64_t g = generation_.load(std::memory_order_acquire);
      if (g == seen) {
        const auto t0 = std::chrono::steady_clock::now();
        const int64_t limit = spin_ns();
        for (int i = 0;; i++) {
          cpu_relax();
          g = generation_.load(std::memory_order_acquire);
          if (g != seen) break;
          if ((i & 255) == 255 &&
              std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count() >
                  limit) {
            std::unique_lock<std::mutex> lk(mutex_);
            sleepers_.fetch_add(1, std::memory_order_seq_cst);
            cv_.wait(lk, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
            sleepers_.fetch_sub(1, std::memory_order_relaxed);
            g = generation_.load(std::memory_order_acquire);
            break;
          }
        }
      }
      seen = g;
      if (quit_.load(std::memory_order_acquire)) return;
      const int64_t P = static_cast<int64_t>(g & 0xffff);
      if (id < P) run_chunks(serial_of(g), P);
    }
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;      // sleeping workers
  std::condition_variable cv_;
  // The job and its generation share a cache line (one transfer brings a worker both); the completion count
  // is on its own line.
  // The job: written before generation_ is published, read by the workers taking part after they see it.
  alignas(64) std::atomic<uint64_t> generation_{0};
  ChunkFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  // (job serial << 32) | next unclaimed chunk: whoever of the caller and the job's workers comes first runs a chunk.
  alignas(64) std::atomic<uint64_t> claim_{0};
  alignas(64) std::atomic<int> pending_{0};  // chunks not yet finished
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> quit_{false};
};

int default_threads() {
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc > 256 ? 256 : hc);
}

// Never destroyed: workers blocked in the pool at process exit must not see it torn down.
Pool& pool() {
  static Pool* p = new Pool(default_threads());
  return *p;
}

}  // namespace

int pool_threads() { return pool().threads(); }

void pool_set_threads(int n) {
  if (n < 1) n = 1;
  if (n > 256) n = 256;
  if (n == pool().threads()) return;
  pool().resize(n);
}

void pool_run(int64_t n, ChunkFn fn, void* ctx, int max_threads) { pool().run(n, fn, ctx, max_threads); }

}  // namespace glance
