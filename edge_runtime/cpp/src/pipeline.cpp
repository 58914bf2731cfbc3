#include "pipeline.h"

#include <utility>

namespace agiqa {

DecodeAhead::DecodeAhead(size_t count, int threads, size_t ahead, Prepare prepare)
    : count_(count), ahead_(ahead < 1 ? 1 : ahead), prepare_(std::move(prepare)) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

DecodeAhead::~DecodeAhead() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void DecodeAhead::work() {
  for (;;) {
    size_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Wait for room: the item must be within `ahead` of the one the caller waits for.
      changed_.wait(lock, [this] { return stop_ || claimed_ >= count_ || claimed_ < taken_ + ahead_; });
      if (stop_ || claimed_ >= count_) return;
      index = claimed_++;
    }
    Slot slot;
    try {
      slot.prepared = prepare_(index);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(index, std::move(slot));
    }
    changed_.notify_all();
  }
}

Prepared DecodeAhead::next() {
  if (workers_.empty()) return prepare_(taken_++);
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return ready_.count(taken_) > 0; });
  auto node = ready_.extract(taken_++);
  lock.unlock();
  changed_.notify_all();  // room for one more
  if (node.mapped().error) std::rethrow_exception(node.mapped().error);
  return std::move(node.mapped().prepared);
}

int default_decode_threads() {
  return std::thread::hardware_concurrency() == 1 ? 1 : 2;
}

}  // namespace agiqa
