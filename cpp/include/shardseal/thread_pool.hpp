// A process-wide pool of worker threads, created on first use and re-created in a child
// process after fork() (PyTorch DataLoader workers fork).
#pragma once

#include <cstddef>
#include <functional>

namespace shardseal {

// The number of CPUs this process may run on (its affinity mask), at least 1.
unsigned available_cpus();

// Runs task(i) for every i in [0, n_tasks) on at most `threads` threads, the calling thread
// included, and returns when all have run. threads <= 1 runs everything inline. If a task
// throws, tasks not yet started are skipped and the first exception is rethrown here.
// Safe to call from many threads at once.
void parallel_for(size_t n_tasks, unsigned threads, const std::function<void(size_t)>& task);

}  // namespace shardseal
