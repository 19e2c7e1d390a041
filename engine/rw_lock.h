// A reader-writer lock that lets a waiting writer in ahead of new readers.
//
// ImageState::io_mu is taken shared by every read and write of an image and
// exclusively by snapshot creation. glibc's default rwlock (behind
// std::shared_mutex) prefers readers, so under a steady stream of I/O a
// snapshot could wait for seconds; DESIGN allows writes to pause only
// briefly. With writer preference, a snapshot waits only for the I/O already
// in flight. Meets the SharedMutex requirements (usable with std::shared_lock
// and std::unique_lock).
#pragma once

#include <pthread.h>

#include <cstdlib>

namespace snapdisk::engine {

class WriterPreferringMutex {
 public:
  WriterPreferringMutex() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&lock_, &attr) != 0) std::abort();
    pthread_rwlockattr_destroy(&attr);
  }
  ~WriterPreferringMutex() { pthread_rwlock_destroy(&lock_); }
  WriterPreferringMutex(const WriterPreferringMutex&) = delete;
  WriterPreferringMutex& operator=(const WriterPreferringMutex&) = delete;

  void lock() { Check(pthread_rwlock_wrlock(&lock_)); }
  bool try_lock() { return pthread_rwlock_trywrlock(&lock_) == 0; }
  void unlock() { Check(pthread_rwlock_unlock(&lock_)); }
  void lock_shared() { Check(pthread_rwlock_rdlock(&lock_)); }
  bool try_lock_shared() { return pthread_rwlock_tryrdlock(&lock_) == 0; }
  void unlock_shared() { Check(pthread_rwlock_unlock(&lock_)); }

 private:
  // A failing lock call means a broken invariant (e.g. a recursive shared
  // lock, which this lock kind forbids): abort rather than limp on.
  static void Check(int rc) {
    if (rc != 0) std::abort();
  }
  pthread_rwlock_t lock_;
};

}  // namespace snapdisk::engine
