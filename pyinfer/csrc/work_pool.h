// Loops split into chunks that the calling thread and helper threads take one at a time from a shared
// counter. The caller returns once every chunk is done, not once every helper has come: a thread that the
// OS takes off its core (for the HTTP server or the client beside the engine, say) holds up the loop by
// the chunk it is on at most, where a fork-join team (OpenMP's, behind at::parallel_for) waits at each
// loop's end until that thread gets a core back and arrives.
#pragma once

#include <cstdint>

namespace pyinfer {

using ChunkBody = void (*)(const void* context, int64_t begin, int64_t end);

// Runs body(context, b, e) over [begin, end) in chunks of at least `grain`, on this thread and the pool's
// (at::get_num_threads() threads in all); the first exception a chunk throws is rethrown here.
void run_chunks(int64_t begin, int64_t end, int64_t grain, ChunkBody body, const void* context);

// As at::parallel_for(begin, end, grain, f), with f(b, e) run on chunks taken as above.
template <typename F>
void parallel_chunks(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  run_chunks(
      begin, end, grain, [](const void* c, int64_t b, int64_t e) { (*static_cast<const F*>(c))(b, e); }, &f);
}

}  // namespace pyinfer
