// Decoding ahead of the model: `threads` workers prepare items 0, 1, 2, ... (decode + preprocess)
// while the caller runs the program on the ones before, and next() hands them back in order.
// At most `ahead` prepared items wait at any time, so memory stays flat however long the list;
// a worker never holds more than the one image it is decoding. threads == 0 prepares each item
// in next(), in the caller's thread (one at a time, the reference the pipeline must equal).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace agiqa {

struct Prepared {
  std::vector<float> input;  // the (1, 3, H, W) model input; empty when skipped
  std::string skipped;       // why the image cannot be scored (ImageLoadError::reason)
};

class DecodeAhead {
 public:
  using Prepare = std::function<Prepared(size_t index)>;

  DecodeAhead(size_t count, int threads, size_t ahead, Prepare prepare);
  ~DecodeAhead();  // stops the workers (items not taken yet are dropped)
  DecodeAhead(const DecodeAhead&) = delete;
  DecodeAhead& operator=(const DecodeAhead&) = delete;

  // Item `taken` (0, 1, ... in turn); rethrows what its Prepare threw (other than a skip).
  Prepared next();

 private:
  void work();

  struct Slot {
    Prepared prepared;
    std::exception_ptr error;
  };
  const size_t count_;
  const size_t ahead_;
  Prepare prepare_;
  std::mutex mutex_;
  std::condition_variable changed_;
  size_t claimed_ = 0;  // next index a worker will take
  size_t taken_ = 0;    // next index next() returns
  bool stop_ = false;
  std::map<size_t, Slot> ready_;
  std::vector<std::thread> workers_;
};

// The default --decode-threads: 2, or 1 on a one-core machine (as agiqa-score).
int default_decode_threads();

}  // namespace agiqa
