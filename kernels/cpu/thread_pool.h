// A persistent CPU thread pool with static chunking.
//
// One worker per hardware thread minus one; the calling thread runs chunks too. Chunks are claimed one at a time
// by whoever of the caller and the job's workers is free, so a worker that the OS has not scheduled (another
// process busy on its core) is simply not waited for. Workers spin for a short
// while after each job (decode runs ~150 small ops per token, so the next job usually arrives within
// microseconds) and then block on a condition variable, so an idle process burns no CPU.
//
//   parallel_for(n, [&](int64_t begin, int64_t end) { ... });
//
// splits [0, n) into min(n, threads) contiguous chunks of (almost) equal size, chunk p = [n*p/P, n*(p+1)/P),
// and runs them concurrently; it returns when all are done. Calls from inside a job, or from a second thread
// while the pool is busy (e.g. a worker_thread), run the whole range inline on the caller instead.
// The function must not throw.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

namespace glance {

using ChunkFn = void (*)(void* ctx, int64_t begin, int64_t end);

// Total threads the pool uses (workers + caller), >= 1.
int pool_threads();

// Resizes the pool to n threads in total (1..256). Not to be called from inside a job.
void pool_set_threads(int n);

// Runs fn(ctx, begin, end) over [0, n) on up to max_threads threads (0 = all). See above.
void pool_run(int64_t n, ChunkFn fn, void* ctx, int max_threads);

template <class F>
inline void parallel_for(int64_t n, F&& fn, int max_threads = 0) {
  using Fn = typename std::remove_reference<F>::type;
  if (n <= 0) return;
  pool_run(
      n, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); }, static_cast<void*>(&fn),
      max_threads);
}

// fn(i) for every item i in [0, n), items handed out one at a time from a shared counter: for items of very
// unequal cost (causal attention rows). Which thread runs an item must not change its result.
template <class F>
inline void parallel_dynamic(int64_t n, F&& fn, int max_threads = 0) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t P = max_threads > 0 ? max_threads : pool_threads();
  parallel_for(
      P < n ? P : n,
      [&](int64_t, int64_t) {
        for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
             i = next.fetch_add(1, std::memory_order_relaxed))
          fn(i);
      },
      max_threads);
}

// How many threads are worth waking for `work` units when one thread should get at least `grain` of them.
inline int threads_for(int64_t work, int64_t grain) {
  const int64_t t = grain > 0 ? work / grain : work;
  const int p = pool_threads();
  return t < 1 ? 1 : (t > p ? p : static_cast<int>(t));
}

}  // namespace glance
