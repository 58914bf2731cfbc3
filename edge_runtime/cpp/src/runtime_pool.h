// Work split over the ExecuTorch runtime's own thread pool (the pthreadpool XNNPACK runs on).
//
// Why not threads of our own: a camera frame is preprocessed right before (and right after) the
// model runs, and the runtime's workers spin for a while after each run before they sleep. On a
// 2-core phone or desktop a thread we start then shares its core with a spinning worker, and
// starting it costs tens of microseconds per frame; the pool's own workers are already awake
// and have the cores to themselves.
//
// The pool runs one job at a time: a call made while the model runs on another thread waits for
// it. That is what a camera loop wants (preprocess, then run); the gallery's decode threads,
// which prepare images while the model runs, keep their own threads (split_rows).
#pragma once

#include <cstddef>
#include <cstdint>

#include "resample.h"

// pthreadpool's C API (pthreadpool.h), exported by the runtime's libexecutorch_threadpool; the
// wheel's SDK ships no header for it.
extern "C" {
struct pthreadpool;
typedef void (*pthreadpool_task_1d_t)(void*, size_t);
size_t pthreadpool_get_threads_count(struct pthreadpool* threadpool);
void pthreadpool_parallelize_1d(struct pthreadpool* threadpool, pthreadpool_task_1d_t function, void* context,
                                size_t range, uint32_t flags);
}
namespace executorch::extension::threadpool {
struct pthreadpool* get_pthreadpool();
}

namespace agiqa {

// Runs part(y0, y1) over `threads` slices of [0, n) rows, as split_rows does, on the runtime's
// pool when it has that many threads (else on threads of our own).
template <typename Part>
void split_rows_on_runtime_pool(int n, int threads, const Part& part) {
  threads = std::max(1, std::min(threads, n));
  struct pthreadpool* pool = threads > 1 ? executorch::extension::threadpool::get_pthreadpool() : nullptr;
  if (pool == nullptr || pthreadpool_get_threads_count(pool) < size_t(threads)) return split_rows(n, threads, part);
  struct Job {
    const Part* part;
    int n, threads;
  } job{&part, n, threads};
  pthreadpool_parallelize_1d(
      pool,
      [](void* context, size_t i) {
        const Job& j = *static_cast<const Job*>(context);
        (*j.part)(int(j.n * i / j.threads), int(j.n * (i + 1) / j.threads));
      },
      &job, size_t(threads), 0);
}

}  // namespace agiqa
