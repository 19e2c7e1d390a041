#include "fs/uring_transport.h"

#include <liburing.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/fuse_uring_abi.h"
#include "fs/log.h"

namespace snapdisk::fs {

namespace abi = uring_abi;

namespace {

constexpr const char* kEnableUringParam = "/sys/module/fuse/parameters/enable_uring";
constexpr const char* kPossibleCpus = "/sys/devices/system/cpu/possible";

// CQE tags: the one ring entry's command, or the poll on the stop eventfd.
constexpr uint64_t kEntryTag = 1;
constexpr uint64_t kStopTag = 2;
// Room before the payload for the request's fuse_in_header and op header,
// so that libfuse sees one contiguous request without a copy of its data.
constexpr size_t kHeaderZone = 4096;
constexpr int kMaxRegisterRetries = 100;

// Linux 6.15 lets a waiter say its wait is not I/O (io_uring_enter(2)).
// Without it, each worker's wait for the next request counts as iowait
// while its ring entry is with the kernel, which is always: the machine
// showed 99-100 % I/O pressure (/proc/pressure/io "some") and iowait CPU
// time with an idle device for as long as the store was mounted. Debian's
// liburing 2.3 predates both values; they are the kernel's ABI.
constexpr unsigned kFeatNoIowait = 1U << 17;   // IORING_FEAT_NO_IOWAIT
constexpr unsigned kEnterNoIowait = 1U << 7;   // IORING_ENTER_NO_IOWAIT

// The number of possible CPUs ("0-1", "0-3,8-11"): the kernel keeps one
// queue per possible CPU and the ring is ready only when each has an entry.
unsigned CountPossibleCpus() {
  std::ifstream in(kPossibleCpus);
  std::string text;
  if (!std::getline(in, text)) return 0;
  unsigned count = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string range = text.substr(pos, comma - pos);
    unsigned lo = 0, hi = 0;
    size_t dash = range.find('-');
    lo = static_cast<unsigned>(std::strtoul(range.c_str(), nullptr, 10));
    hi = dash == std::string::npos ? lo
                                   : static_cast<unsigned>(std::strtoul(range.c_str() + dash + 1, nullptr, 10));
    if (hi >= lo) count += hi - lo + 1;
    pos = comma + 1;
  }
  return count;
}

// Whether the fuse module lets servers use io_uring, turning it on if the
// daemon may. The parameter only allows a server to ask for io_uring in its
// INIT reply; servers that do not ask (every libfuse 3.14 one) are unaffected.
Status EnsureKernelAllowsUring() {
  std::ifstream in(kEnableUringParam);
  std::string value;
  if (!in || !std::getline(in, value)) {
    return Status::NotSupported(
        "this kernel has no FUSE over io_uring (no " + std::string(kEnableUringParam) +
        "; it needs Linux 6.14+ built with CONFIG_FUSE_IO_URING)");
  }
  if (value == "Y" || value == "1") return Status::OK();
  std::ofstream out(kEnableUringParam);
  out << "Y";
  out.flush();
  if (!out) {
    return Status::NotSupported(
        std::string("FUSE over io_uring is off in the kernel and the daemon cannot turn it on (") +
        std::strerror(errno) + "); as root: echo Y > " + kEnableUringParam);
  }
  Log(LogLevel::kInfo,
      "snapdisk: turned on the fuse module's enable_uring parameter (it lets FUSE servers "
      "that ask for io_uring use it; it changes nothing for the others)");
  return Status::OK();
}

// The kernel orders each reply before every request it causes (an open's
// reply before the reads of the file it opened, a write's before the read
// that follows it), and it does so through io_uring, where ThreadSanitizer
// cannot see it: two ring threads share no lock, so the second thread's use of
// what the first one made looks like a race. The transport tells TSan: a
// release before each reply is committed, an acquire when a request arrives.
// (Over /dev/fuse, libfuse's own locks give TSan an order by accident.)
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
char g_kernel_order;
void KernelOrderRelease() { __tsan_release(&g_kernel_order); }
void KernelOrderAcquire() { __tsan_acquire(&g_kernel_order); }
#else
void KernelOrderRelease() {}
void KernelOrderAcquire() {}
#endif

void PrepUringCmd(io_uring_sqe* sqe, int fd, abi::Cmd cmd, uint16_t qid, uint64_t commit_id) {
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // a 128-byte SQE (IORING_SETUP_SQE128)
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = cmd;
  auto* req = reinterpret_cast<abi::CmdReq*>(sqe->cmd);
  req->qid = qid;
  req->commit_id = commit_id;
  io_uring_sqe_set_data64(sqe, kEntryTag);
}

}  // namespace

class UringTransport::Impl {
 public:
  class Worker;

  Status Prepare(const UringConfig& config);
  void Attach(fuse_session* se) {
    se_ = se;
    fd_ = fuse_session_fd(se);
  }
  void Stop();
  std::string Describe() const;

  // The custom I/O of the session (fuse_custom_io).
  ssize_t Read(int fd, void* buf, size_t len);
  ssize_t Writev(int fd, iovec* iov, int count);

  fuse_session* session() const { return se_; }
  int fd() const { return fd_; }
  int stop_fd() const { return stop_fd_; }
  size_t payload_size() const { return payload_size_; }
  const cpu_set_t& float_cpus() const { return float_cpus_; }

  // Ring threads: wait for the go (INIT negotiated) or the stop.
  bool WaitForGo();
  void ReportReady(bool ok);

 private:
  ssize_t ReplyToInit(int fd, iovec* iov, int count);

  UringConfig config_;
  fuse_session* se_ = nullptr;
  int fd_ = -1;
  int stop_fd_ = -1;
  unsigned queues_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;

  // Set by Read() when it passes INIT through; read by Writev() afterwards
  // (libfuse replies to INIT on the thread that read it).
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> kernel_offered_{false};
  std::atomic<bool> negotiated_{false};
  size_t payload_size_ = 0;  // written before the go, read by workers after it
  cpu_set_t float_cpus_{};   // the CPUs the daemon may use; set before the workers start

  std::mutex mu_;
  std::condition_variable cv_;
  enum class Phase { kWaiting, kGo, kStop } phase_ = Phase::kWaiting;  // guarded by mu_
  unsigned reported_ = 0;                                              // guarded by mu_
  unsigned failed_ = 0;                                                // guarded by mu_
};

namespace {
// The transport whose session this process serves (custom I/O callbacks get
// only the session's userdata, the SnapFs), and the ring worker the current
// thread is serving a request for.
std::atomic<UringTransport::Impl*> g_transport{nullptr};
thread_local UringTransport::Impl::Worker* t_serving = nullptr;
}  // namespace

// One thread, one io_uring, one ring entry (a header buffer and a payload
// buffer registered with the kernel) on queue `qid`. One entry per thread:
// the kernel hands a request only to an entry that is back from userspace,
// so a request never waits behind a busy thread while another is idle.
class UringTransport::Impl::Worker {
 public:
  Worker(Impl* owner, uint16_t qid) : owner_(owner), qid_(qid) {}
  ~Worker() {
    Join();
    std::free(area_);
  }
  void Start() { thread_ = std::thread([this] { Run(); }); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  // Pins this thread to its queue's CPU (CPU work) or lets it float (work
  // that may wait for the disk); a system call only when that changes.
  void Place(RingWork work);
  char* ReplyBuffer(size_t size) const { return size <= payload_cap_ ? payload_ : nullptr; }
  // libfuse's reply to the request this thread is serving, if `iov` is it.
  bool OwnsReply(const iovec* iov, int count) const {
    return count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header) && !replied_ &&
           static_cast<const fuse_out_header*>(iov[0].iov_base)->unique == unique_;
  }
  ssize_t Reply(const iovec* iov, int count);

 private:
  void Run();
  bool Register();
  void Serve();
  bool Commit(const fuse_out_header& out, uint32_t payload_sz);
  io_uring_sqe* Sqe();
  // io_uring_wait_cqe, but not counted as iowait where the kernel allows.
  int WaitCqe(io_uring_cqe** cqe);

  Impl* const owner_;
  const uint16_t qid_;
  std::thread thread_;
  io_uring ring_{};
  // The entry's buffers; only this thread touches them after registration.
  abi::ReqHeader header_{};
  char* area_ = nullptr;     // kHeaderZone + payload, page-aligned
  char* payload_ = nullptr;  // area_ + kHeaderZone
  size_t payload_cap_ = 0;
  iovec iov_[2]{};
  uint64_t unique_ = 0;  // the request being served
  bool replied_ = false;
  bool pinned_ = false;  // to CPU qid_; else free to run on any CPU of float_cpus_
  bool no_iowait_ = false;  // the kernel has IORING_FEAT_NO_IOWAIT
};

io_uring_sqe* UringTransport::Impl::Worker::Sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {  // full: hand what is queued to the kernel first
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

int UringTransport::Impl::Worker::WaitCqe(io_uring_cqe** cqe) {
  if (!no_iowait_) return io_uring_wait_cqe(&ring_, cqe);
  for (;;) {
    const int rc = io_uring_peek_cqe(&ring_, cqe);
    if (rc != -EAGAIN) return rc;
    // Nothing to submit (Commit and Register submit their own), wait for one.
    if (syscall(__NR_io_uring_enter, ring_.ring_fd, 0, 1, IORING_ENTER_GETEVENTS | kEnterNoIowait, nullptr,
                _NSIG / 8) < 0)
      return -errno;
  }
}

bool UringTransport::Impl::Worker::Register() {
  io_uring_sqe* sqe = Sqe();
  if (sqe == nullptr) return false;
  PrepUringCmd(sqe, owner_->fd(), abi::kCmdRegister, qid_, 0);
  sqe->addr = reinterpret_cast<uint64_t>(iov_);
  sqe->len = 2;
  return io_uring_submit(&ring_) >= 0;
}

bool UringTransport::Impl::Worker::Commit(const fuse_out_header& out, uint32_t payload_sz) {
  std::memcpy(header_.in_out, &out, sizeof out);
  header_.ring_ent_in_out.payload_sz = payload_sz;
  KernelOrderRelease();
  io_uring_sqe* sqe = Sqe();
  if (sqe == nullptr) return false;
  PrepUringCmd(sqe, owner_->fd(), abi::kCmdCommitAndFetch, qid_, header_.ring_ent_in_out.commit_id);
  int rc = io_uring_submit(&ring_);
  if (rc < 0) {
    Log(LogLevel::kError, "snapdisk: io_uring queue {}: cannot send a reply: {}", qid_,
        std::strerror(-rc));
    return false;
  }
  return true;
}

ssize_t UringTransport::Impl::Worker::Reply(const iovec* iov, int count) {
  const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
  size_t payload = 0;
  for (int i = 1; i < count; ++i) {
    size_t len = iov[i].iov_len;
    if (payload + len > payload_cap_) {
      Log(LogLevel::kError, "snapdisk: io_uring queue {}: a reply of over {} bytes does not fit",
          qid_, payload_cap_);
      errno = EINVAL;
      return -1;
    }
    // A read's data is built in place (RingReplyBuffer): no copy then.
    if (iov[i].iov_base != payload_ + payload) std::memcpy(payload_ + payload, iov[i].iov_base, len);
    payload += len;
  }
  // The reply leaves now, not when the op returns: ops may go on after they
  // replied (a read's prefetch), off the requester's path. From here on the
  // kernel may fill the entry with the next request.
  replied_ = true;
  if (!Commit(*out, out->error != 0 ? 0 : static_cast<uint32_t>(payload))) {
    errno = EIO;
    return -1;
  }
  return static_cast<ssize_t>(sizeof(fuse_out_header) + payload);
}

void UringTransport::Impl::Worker::Serve() {
  fuse_in_header in;
  std::memcpy(&in, header_.in_out, sizeof in);
  const uint32_t payload_sz = header_.ring_ent_in_out.payload_sz;
  const size_t fixed = sizeof in + payload_sz;
  if (payload_sz > payload_cap_ || in.len < fixed || in.len - fixed > abi::kOpInOutSize) {
    Log(LogLevel::kError,
        "snapdisk: io_uring queue {}: malformed request (opcode {}, length {}, payload {}); "
        "answered EIO",
        qid_, in.opcode, in.len, payload_sz);
    Commit(fuse_out_header{sizeof(fuse_out_header), -EIO, in.unique}, 0);
    return;
  }
  // Rebuild the request as /dev/fuse would deliver it, in front of the
  // payload: header, op header, then the payload where the kernel put it.
  const size_t op_len = in.len - fixed;
  char* start = payload_ - sizeof in - op_len;
  std::memcpy(start, &in, sizeof in);
  std::memcpy(start + sizeof in, header_.op_in, op_len);
  fuse_buf buf{};
  buf.mem = start;
  buf.size = in.len;
  unique_ = in.unique;
  replied_ = false;
  t_serving = this;
  fuse_session_process_buf(owner_->session(), &buf);
  t_serving = nullptr;
  if (!replied_) {
    // libfuse answers NOTIFY_REPLY without a reply; the entry must still come
    // back. Anything else unanswered is a bug: the requester gets EIO.
    bool expected = in.opcode == FUSE_NOTIFY_REPLY;
    if (!expected) {
      Log(LogLevel::kError, "snapdisk: io_uring queue {}: opcode {} got no reply; answered EIO",
          qid_, in.opcode);
    }
    replied_ = true;
    Commit(fuse_out_header{sizeof(fuse_out_header), expected ? 0 : -EIO, in.unique}, 0);
  }
}

void UringTransport::Impl::Worker::Place(RingWork work) {
  const bool pin = work != RingWork::kMayWaitForDisk;
  if (pin == pinned_) return;
  cpu_set_t cpus;
  if (pin) {
    CPU_ZERO(&cpus);
    CPU_SET(qid_, &cpus);
  } else {
    cpus = owner_->float_cpus();
  }
  if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) {
    Log(LogLevel::kDebug, "snapdisk: io_uring queue {}: cannot {} CPU {}: {}", qid_,
        pin ? "pin to" : "unpin from", qid_, std::strerror(errno));
  }
  pinned_ = pin;
}

void UringTransport::Impl::Worker::Run() {
  // Pinned to its queue's CPU: requests of tasks on that CPU come here, and
  // serving them there is the point (a local wakeup instead of a cross-CPU one).
  Place(RingWork::kCpu);
  io_uring_params params{};
  params.flags = IORING_SETUP_SQE128;
  int rc = io_uring_queue_init_params(4, &ring_, &params);
  no_iowait_ = rc == 0 && (params.features & kFeatNoIowait) != 0;
  owner_->ReportReady(rc == 0);
  if (rc != 0) {
    Log(LogLevel::kError, "snapdisk: io_uring queue {}: cannot create a ring: {}", qid_,
        std::strerror(-rc));
    return;
  }
  bool go = owner_->WaitForGo();
  if (go) {
    payload_cap_ = owner_->payload_size();
    void* area = nullptr;
    if (posix_memalign(&area, kHeaderZone, kHeaderZone + payload_cap_) != 0) {
      Log(LogLevel::kError, "snapdisk: io_uring queue {}: out of memory", qid_);
      go = false;
    } else {
      area_ = static_cast<char*>(area);
      payload_ = area_ + kHeaderZone;
      iov_[0] = {&header_, sizeof header_};
      iov_[1] = {payload_, payload_cap_};
    }
  }
  if (go) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_poll_add(sqe, owner_->stop_fd(), POLLIN);
    io_uring_sqe_set_data64(sqe, kStopTag);
    go = Register();
  }
  int retries = 0;
  while (go) {
    io_uring_cqe* cqe = nullptr;
    rc = WaitCqe(&cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) {
      Log(LogLevel::kError, "snapdisk: io_uring queue {}: waiting failed: {}", qid_,
          std::strerror(-rc));
      break;
    }
    const uint64_t tag = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    if (tag == kStopTag) break;
    if (res == 0) {
      KernelOrderAcquire();
      Serve();
      continue;
    }
    // The connection is gone (unmount, abort) or this thread's commands were
    // cancelled: a normal end.
    if (res == -ENOTCONN || res == -ECONNABORTED || res == -ECANCELED || res == -ENODEV) break;
    if ((res == -EAGAIN || res == -EINTR) && ++retries <= kMaxRegisterRetries) {
      go = Register();  // raced INIT; the kernel asks to try again
      continue;
    }
    Log(LogLevel::kError, "snapdisk: io_uring queue {}: ring entry failed: {}", qid_,
        std::strerror(-res));
    break;
  }
  io_uring_queue_exit(&ring_);
}

Status UringTransport::Impl::Prepare(const UringConfig& config) {
  config_ = config;
  if (config.mode == UringConfig::Mode::kOff) return Status::OK();
  auto unavailable = [&](Status why) {
    if (config.mode == UringConfig::Mode::kOn) return why;
    Log(LogLevel::kInfo, "snapdisk: serving over /dev/fuse: {}", why.message());
    return Status::OK();
  };
  if (Status st = EnsureKernelAllowsUring(); !st.ok()) return unavailable(st);
  queues_ = CountPossibleCpus();
  if (queues_ == 0 || queues_ > 4096) {
    return unavailable(Status::NotSupported(std::string("cannot count CPUs in ") + kPossibleCpus));
  }
  if (sched_getaffinity(0, sizeof float_cpus_, &float_cpus_) != 0) {
    return unavailable(Status::IOError(std::string("sched_getaffinity: ") + std::strerror(errno)));
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) return unavailable(Status::IOError(std::strerror(errno)));
  const unsigned per_queue = std::max(1u, config.threads_per_queue);
  for (unsigned q = 0; q < queues_; ++q) {
    for (unsigned t = 0; t < per_queue; ++t) {
      workers_.push_back(std::make_unique<Worker>(this, static_cast<uint16_t>(q)));
    }
  }
  for (auto& w : workers_) w->Start();
  unsigned failed = 0;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return reported_ == workers_.size(); });
    failed = failed_;
  }
  if (failed != 0) {
    Stop();
    workers_.clear();
    return unavailable(Status::NotSupported(
        "cannot create io_uring rings (io_uring disabled by the kernel.io_uring_disabled "
        "sysctl or a seccomp policy?)"));
  }
  return Status::OK();
}

void UringTransport::Impl::ReportReady(bool ok) {
  std::lock_guard lock(mu_);
  ++reported_;
  if (!ok) ++failed_;
  cv_.notify_all();
}

bool UringTransport::Impl::WaitForGo() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return phase_ != Phase::kWaiting; });
  return phase_ == Phase::kGo;
}

void UringTransport::Impl::Stop() {
  {
    std::lock_guard lock(mu_);
    phase_ = Phase::kStop;
  }
  cv_.notify_all();
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t n = write(stop_fd_, &one, sizeof one);
    (void)n;
  }
  for (auto& w : workers_) w->Join();
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
}

std::string UringTransport::Impl::Describe() const {
  if (!negotiated_.load()) return "/dev/fuse";
  return "io_uring (" + std::to_string(queues_) + " CPU queues x " +
         std::to_string(workers_.size() / std::max(1u, queues_)) + " threads)";
}

ssize_t UringTransport::Impl::Read(int fd, void* buf, size_t len) {
  ssize_t n = read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header) + offsetof(fuse_init_in, flags2)) &&
      init_unique_.load(std::memory_order_relaxed) == 0) {
    const auto* in = static_cast<const fuse_in_header*>(buf);
    if (in->opcode == FUSE_INIT) {
      fuse_init_in init{};
      size_t avail = static_cast<size_t>(n) - sizeof *in;
      std::memcpy(&init, static_cast<const char*>(buf) + sizeof *in, std::min(avail, sizeof init));
      bool ext = (init.flags & FUSE_INIT_EXT) != 0 && avail >= offsetof(fuse_init_in, flags2) + 4;
      kernel_offered_.store(ext && (init.flags2 & (abi::kOverIoUring >> 32)) != 0);
      init_unique_.store(in->unique);
    }
  }
  return n;
}

ssize_t UringTransport::Impl::ReplyToInit(int fd, iovec* iov, int count) {
  const bool offer = !workers_.empty();
  if (!offer) return writev(fd, iov, count);
  const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
  if (out->error != 0 || count != 2 || iov[1].iov_len < offsetof(fuse_init_out, unused) ||
      !kernel_offered_.load()) {
    Log(LogLevel::kError,
        "snapdisk: the kernel did not offer FUSE over io_uring at INIT; serving over /dev/fuse");
    Stop();
    return writev(fd, iov, count);
  }
  fuse_init_out init{};
  std::memcpy(&init, iov[1].iov_base, std::min(iov[1].iov_len, sizeof init));
  init.flags |= FUSE_INIT_EXT;
  init.flags2 |= static_cast<uint32_t>(abi::kOverIoUring >> 32);
  // The kernel requires each entry's payload buffer to hold the largest
  // request or reply: max(8 KiB, max_write, max_pages pages).
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t max_pages = (init.flags & FUSE_MAX_PAGES) ? init.max_pages : 32;
  payload_size_ = std::max({size_t{8192}, size_t{init.max_write}, max_pages * page, 32 * page});
  iovec patched[2] = {iov[0], {&init, iov[1].iov_len}};
  ssize_t n = writev(fd, patched, 2);
  if (n < 0) {
    int err = errno;
    Stop();
    errno = err;
    return n;
  }
  // The kernel took the reply (its INIT processing runs inside that write):
  // registering is allowed from now on, and requests wait until every CPU's
  // queue has an entry.
  negotiated_.store(true);
  Log(LogLevel::kInfo, "snapdisk: serving over {}", Describe());
  {
    std::lock_guard lock(mu_);
    phase_ = Phase::kGo;
  }
  cv_.notify_all();
  return n;
}

ssize_t UringTransport::Impl::Writev(int fd, iovec* iov, int count) {
  if (UringTransport::Impl::Worker* w = t_serving; w != nullptr && w->OwnsReply(iov, count)) {
    return w->Reply(iov, count);
  }
  uint64_t init_unique = init_unique_.load(std::memory_order_relaxed);
  if (init_unique != 0 && count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header) &&
      static_cast<const fuse_out_header*>(iov[0].iov_base)->unique == init_unique) {
    init_unique_.store(~uint64_t{0});  // answered: no later reply can match it
    return ReplyToInit(fd, iov, count);
  }
  return writev(fd, iov, count);
}

// ---- the public face ----

UringTransport::UringTransport() : impl_(std::make_unique<Impl>()) {}
UringTransport::~UringTransport() { Stop(); }

Status UringTransport::Prepare(const UringConfig& config) { return impl_->Prepare(config); }

namespace {
ssize_t CustomRead(int fd, void* buf, size_t len, void*) {
  return g_transport.load()->Read(fd, buf, len);
}
ssize_t CustomWritev(int fd, iovec* iov, int count, void*) {
  return g_transport.load()->Writev(fd, iov, count);
}
}  // namespace

Status UringTransport::Attach(fuse_session* se) {
  impl_->Attach(se);
  g_transport.store(impl_.get());
  fuse_custom_io io{};
  io.read = CustomRead;
  io.writev = CustomWritev;
  int rc = fuse_session_custom_io(se, &io, fuse_session_fd(se));
  if (rc != 0) return Status::IOError(std::string("fuse_session_custom_io: ") + std::strerror(-rc));
  return Status::OK();
}

void UringTransport::Stop() {
  if (impl_) impl_->Stop();
}

void NoteRingWork(RingWork work) {
  if (UringTransport::Impl::Worker* w = t_serving) w->Place(work);
}

char* RingReplyBuffer(size_t size) {
  UringTransport::Impl::Worker* w = t_serving;
  return w == nullptr ? nullptr : w->ReplyBuffer(size);
}

}  // namespace snapdisk::fs
