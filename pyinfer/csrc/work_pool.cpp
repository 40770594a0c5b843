// The helper threads behind parallel_chunks (work_pool.h).
#include "work_pool.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <system_error>
#include <mutex>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyinfer {
namespace {

constexpr int64_t kChunksPerThread = 4;  // enough that the others can cover a thread taken off its core
// How long an idle helper polls for the next loop before it sleeps: longer than the Python between two
// kernels of a step, short enough that an idle server burns no CPU.
constexpr auto kSpin = std::chrono::microseconds(50);

constexpr int kHelperNice = 10;

inline void relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

struct Loop {
  ChunkBody body = nullptr;
  const void* context = nullptr;
  int64_t begin = 0, end = 0, chunk = 1, count = 0;
};

thread_local bool in_chunk = false;  // a loop inside a chunk runs on its own thread: no nested waits

class Pool {
 public:
  explicit Pool(int threads) : requested_(threads), owner_(getpid()) {
    try {
      for (int i = 1; i < threads; ++i) threads_.emplace_back([this] { help(); });
    } catch (const std::system_error&) {  // no more threads to be had: run with those started
    }
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int requested() const { return requested_; }
  // A forked child inherits the pool but none of its threads: it must neither join them nor wait on them.
  bool forked() const { return getpid() != owner_; }

  void run(const Loop& loop) {
    uint64_t g;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      loop_ = loop;
      error_ = nullptr;
      done_.store(0, std::memory_order_relaxed);
      g = generation_.load(std::memory_order_relaxed) + 1;
      claim_.store(tag(g), std::memory_order_relaxed);
      generation_.store(g, std::memory_order_release);
    }
    if (sleeping_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    work(g, loop);
    while (done_.load(std::memory_order_acquire) < loop.count) relax();
    if (error_) std::rethrow_exception(error_);  // every chunk is done: no one writes it now
  }

 private:
  static uint64_t tag(uint64_t generation) { return generation << 32; }

  // Takes and runs chunks of loop `g` until none is left (or a newer loop has replaced it).
  void work(uint64_t g, const Loop& loop) {
    in_chunk = true;
    uint64_t claim = claim_.load(std::memory_order_acquire);
    while ((claim >> 32) == (g & 0xFFFFFFFFu) && static_cast<int64_t>(claim & 0xFFFFFFFFu) < loop.count) {
      if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel)) continue;
      const int64_t b = loop.begin + static_cast<int64_t>(claim & 0xFFFFFFFFu) * loop.chunk;
      try {
        loop.body(loop.context, b, std::min(loop.end, b + loop.chunk));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_release);
      claim = claim_.load(std::memory_order_acquire);
    }
    in_chunk = false;
  }

  void help() {
    // Where the cores are all taken, the scheduler should take a helper off its core, not the caller,
    // which runs the step's Python between loops and covers a helper's chunks
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kHelperNice);
    uint64_t seen = 0;
    while (true) {
      auto started = std::chrono::steady_clock::now();
      for (int polls = 0; generation_.load(std::memory_order_acquire) == seen; ++polls) {
        if ((polls & 63) == 63 && std::chrono::steady_clock::now() - started > kSpin) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleeping_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          sleeping_.fetch_sub(1, std::memory_order_acq_rel);
        } else {
          relax();
        }
      }
      Loop loop;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_) return;
        loop = loop_;
        seen = generation_.load(std::memory_order_relaxed);
      }
      work(seen, loop);
    }
  }

  const int requested_;
  const pid_t owner_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;  // guards loop_ and stop_, and orders a new loop against a helper going to sleep
  std::condition_variable wake_;
  Loop loop_;
  bool stop_ = false;
  std::atomic<uint64_t> generation_{0};  // which loop is current
  std::atomic<uint64_t> claim_{0};       // the current loop's generation (high 32 bits), next chunk (low)
  std::atomic<int64_t> done_{0};         // chunks of the current loop finished
  std::atomic<int> sleeping_{0};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

std::mutex callers;  // one loop at a time: a second Python thread's kernel waits for the first's
// Never destroyed: at exit the OS ends the helpers (a destructor would join them, and in a forked child,
// which has none, wait forever)
Pool* pool = nullptr;

}  // namespace

void run_chunks(int64_t begin, int64_t end, int64_t grain, ChunkBody body, const void* context) {
  const int threads = at::get_num_threads();
  if (in_chunk || threads == 1 || end - begin <= grain) {
    body(context, begin, end);
    return;
  }
  std::lock_guard<std::mutex> lock(callers);
  if (pool == nullptr || pool->forked()) {
    pool = new Pool(threads);  // a forked child's inherited one is left as it is: its threads are gone
  } else if (pool->requested() != threads) {  // torch.set_num_threads changed the count
    delete pool;
    pool = new Pool(threads);
  }
  const int64_t chunk = std::max(grain, (end - begin + threads * kChunksPerThread - 1) / (threads * kChunksPerThread));
  pool->run(Loop{body, context, begin, end, chunk, (end - begin + chunk - 1) / chunk});
}

}  // namespace pyinfer
