// PushPacer: how fast a page server may push (net/page_push.h), set by what the clones lose.
//
// Pushes go to every clone of a VM at once, so they can come faster than a clone takes them:
// its socket buffer fills and the kernel drops the rest. A dropped push is a page that clone
// then fetches over TCP — and that reply is pushed to every clone again. On the 4-host test
// cluster with a 2 Gbit/s link into it, runs of a 256 MiB job dropped up to 36 000 datagrams
// this way and received 3.6 GiB for the 1 GiB they read (docs/perf.md, "Paced pushes"). Each
// clone counts the datagrams its socket dropped (SO_MEMINFO) and tells the server with its
// next page request (docs/protocols/page_server.md, `push_losses`).
//
// The rule is TCP's: additive increase, multiplicative decrease. Pushes may go at `rate`
// bytes per second, in bursts of up to kBurstNs of it (within [kMinBurstBytes, kMaxBurstBytes]:
// at least one 64-page reply, at most a fraction of a clone's socket buffer); a push over that
// is not sent (its pages are fetched by whoever wants them). Losses halve the rate, at most
// once per kCutIntervalNs (the reports of one overflow come in over a few ms); while pushes
// are held back by the rate, it grows by kIncrease per second, up to kMaxRate (as TCP's window
// grows only while it limits the sender: a rate never tried says nothing).
//
// Whose losses: more than half of the receivers', each within kLossWindowNs. Pacing to the
// slowest receiver would cost every other one its pushes — measured on the test cluster, a
// clone starved of CPU for a while lost pushes, the rate fell for all, and the clones that
// took every push before then fetched most pages themselves (docs/perf.md, "Paced pushes").
// Pushes most receivers cannot take are waste; a few slow ones fetch what they lose. A full
// socket on the sender's side is everyone's loss. A receiver that stopped taking pushes
// without leaving (it could not join the group, or gave up on forged datagrams) reports no
// losses and counts as one that takes them: pacing is then looser, as it was without it.
//
// Plain data with the time passed in: the page server's thread only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace flurry {

class PushPacer {
 public:
  static constexpr double kStartRate = 512.0 * (1 << 20);  // bytes/s
  static constexpr double kMinRate = 16.0 * (1 << 20);
  static constexpr double kMaxRate = 4096.0 * (1 << 20);
  static constexpr double kIncrease = 1024.0 * (1 << 20);  // rate gained per second
  static constexpr int64_t kCutIntervalNs = 20'000'000;
  static constexpr int64_t kLossWindowNs = 50'000'000;
  static constexpr int64_t kBurstNs = 4'000'000;
  static constexpr double kMinBurstBytes = 320.0 * 1024;
  static constexpr double kMaxBurstBytes = 2.0 * (1 << 20);

  explicit PushPacer(int64_t now_ns) : last_ns_(now_ns), tokens_(Burst()) {}

  // Whether a push of `bytes` may go now (it is then counted against the rate).
  bool Admit(uint64_t bytes, int64_t now_ns) {
    Advance(now_ns);
    if (tokens_ < static_cast<double>(bytes)) {
      held_back_ = true;
      return false;
    }
    tokens_ -= static_cast<double>(bytes);
    return true;
  }

  // The receivers, by an id of the caller's (a page server's connections).
  void AddReceiver(uint64_t id) {
    if (Find(id) == receivers_.end()) receivers_.push_back({id, kNever});
  }
  void RemoveReceiver(uint64_t id) {
    if (auto it = Find(id); it != receivers_.end()) receivers_.erase(it);
  }
  size_t receivers() const { return receivers_.size(); }

  // Receiver `id` reported pushes lost (one not added before is added now: it took pushes, on
  // a connection other than the one it joined on). Whether the rate was cut.
  bool NoteLoss(uint64_t id, int64_t now_ns) {
    AddReceiver(id);
    Find(id)->last_loss_ns = now_ns;
    size_t losing = 0;
    for (const Receiver& r : receivers_) {
      if (r.last_loss_ns != kNever && now_ns - r.last_loss_ns < kLossWindowNs) ++losing;
    }
    if (2 * losing <= receivers_.size()) return false;
    return NoteOwnLoss(now_ns);
  }

  // The sender's own socket refused a push: every receiver lost it. Whether the rate was cut.
  bool NoteOwnLoss(int64_t now_ns) {
    Advance(now_ns);
    if (cut_before_ && now_ns - last_cut_ns_ < kCutIntervalNs) return false;
    rate_ = std::max(kMinRate, rate_ / 2);
    tokens_ = std::min(tokens_, Burst());
    last_cut_ns_ = now_ns;
    cut_before_ = true;
    return true;
  }

  double rate() const { return rate_; }

 private:
  static constexpr int64_t kNever = INT64_MIN;
  struct Receiver {
    uint64_t id;
    int64_t last_loss_ns;
  };
  std::vector<Receiver>::iterator Find(uint64_t id) {
    return std::find_if(receivers_.begin(), receivers_.end(),
                        [id](const Receiver& r) { return r.id == id; });
  }
  double Burst() const {
    return std::clamp(rate_ * static_cast<double>(kBurstNs) / 1e9, kMinBurstBytes, kMaxBurstBytes);
  }
  void Advance(int64_t now_ns) {
    if (now_ns <= last_ns_) return;  // (a clock that went back adds nothing)
    const double seconds = static_cast<double>(now_ns - last_ns_) / 1e9;
    last_ns_ = now_ns;
    tokens_ = std::min(Burst(), tokens_ + rate_ * seconds);
    // (At most a cut interval's growth at once: a push held back, then a long pause, is not a
    // long time of being held back.)
    if (held_back_) {
      rate_ = std::min(kMaxRate, rate_ + kIncrease * std::min(seconds, kCutIntervalNs / 1e9));
    }
    held_back_ = false;
  }

  double rate_ = kStartRate;
  int64_t last_ns_;
  double tokens_;
  bool held_back_ = false;  // a push was refused since the last Advance
  int64_t last_cut_ns_ = 0;
  bool cut_before_ = false;
  std::vector<Receiver> receivers_;  // few: one per clone of the served VM
};

}  // namespace flurry
