/* emu.cpp: the CUDA emulation behind emu.h: fibers and barriers for kernel threads, a small pool
 * of OS threads for blocks, the runtime (memory, stream, capture, graphs, events), and CPU
 * versions of the cuBLASLt and cuDNN calls the backend makes.
 *
 * A block runs on one OS thread: each CUDA thread is a ucontext fiber; the scheduler runs every
 * runnable fiber until it blocks on a barrier or returns, then releases the barriers that are
 * complete (a warp's 32 lanes, or the whole block) and repeats. AddressSanitizer is told about
 * every stack switch, so the sanitizer build checks the kernels' memory accesses too (it still
 * prints, once per OS thread, that it does not fully support swapcontext).
 */
#include "kernels/cuda/emu.h"
#include "kernels/cuda/cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "engine/util.h"
}

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace sdxs_emu {

namespace {

constexpr size_t kStackBytes = (size_t)256 << 10; /* per CUDA thread; kernels keep small frames */
constexpr size_t kGuardBytes = 4096;              /* an unmapped page below each stack */
constexpr size_t kDefaultSmem = 48 << 10;
constexpr size_t kMaxSmem = 227 << 10; /* what a Hopper block may opt into */
constexpr int kMaxThreads = 1024;

/* ---- AddressSanitizer's fiber hooks (no-ops otherwise) ---- */

void asan_start(void **fake, const void *bottom, size_t size)
{
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

void asan_finish(void *fake, const void **bottom, size_t *size)
{
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

/* ---- fibers ---- */

enum fiber_state { F_RUN, F_BLOCK, F_WARP, F_DONE };
enum warp_op { W_SYNC, W_SHFL, W_VOTE, W_WMMA };

struct fiber {
    ucontext_t ctx;
    char *map = nullptr; /* guard page + stack */
    uint3 tid{};
    int lane = 0;
    fiber_state state = F_DONE;
    warp_op op = W_SYNC;
    uint64_t value = 0, result = 0;
    int src = 0;
    bool pred = false;
    void *fake_stack = nullptr;
};

struct worker {
    std::vector<std::unique_ptr<fiber>> fibers;
    ucontext_t sched;
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
    /* the block being run */
    const char *kernel = "";
    const std::function<void()> *body = nullptr;
    uint3 bid{};
    dim3 bdim, gdim;
    std::vector<unsigned char> smem; /* dynamic shared memory, from a 128-byte boundary on */
    std::vector<float> scratch; /* 512 floats per warp, for wmma */

    ~worker()
    {
        for (auto &f : fibers)
            munmap(f->map, kGuardBytes + kStackBytes);
    }
};

thread_local worker *tls_worker;
thread_local fiber *tls_fiber;
thread_local std::unique_ptr<worker> tls_worker_owner;

worker *this_worker()
{
    if (!tls_worker) {
        tls_worker_owner.reset(new worker());
        tls_worker = tls_worker_owner.get();
    }
    return tls_worker;
}

fiber *current_fiber(const char *what)
{
    if (!tls_fiber)
        sdxs_panic("cuda emulation: %s outside a kernel", what);
    return tls_fiber;
}

void fiber_main()
{
    worker *w = tls_worker;
    fiber *f = tls_fiber;
    asan_finish(nullptr, &w->sched_bottom, &w->sched_size);
    (*w->body)();
    f->state = F_DONE;
    asan_start(nullptr, w->sched_bottom, w->sched_size); /* this fiber's frames are gone */
    setcontext(&w->sched);
    sdxs_panic("cuda emulation: setcontext returned");
}

/* Runs fiber f until it blocks or finishes. */
void resume(worker *w, fiber *f)
{
    void *fake = nullptr;
    tls_fiber = f;
    asan_start(&fake, f->map + kGuardBytes, kStackBytes);
    if (swapcontext(&w->sched, &f->ctx) != 0)
        sdxs_panic("cuda emulation: swapcontext failed");
    asan_finish(fake, nullptr, nullptr);
    tls_fiber = nullptr;
}

/* Called by a fiber: hands control back to the scheduler until a barrier releases it. */
void block_on(fiber *f, fiber_state state)
{
    worker *w = tls_worker;
    f->state = state;
    asan_start(&f->fake_stack, w->sched_bottom, w->sched_size);
    if (swapcontext(&f->ctx, &w->sched) != 0)
        sdxs_panic("cuda emulation: swapcontext failed");
    asan_finish(f->fake_stack, nullptr, nullptr);
}

void prepare_fibers(worker *w, int n)
{
    while ((int)w->fibers.size() < n) {
        std::unique_ptr<fiber> f(new fiber());
        void *m = mmap(nullptr, kGuardBytes + kStackBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            sdxs_panic("cuda emulation: cannot map a fiber stack");
        f->map = static_cast<char *>(m);
        mprotect(f->map, kGuardBytes, PROT_NONE);
        w->fibers.push_back(std::move(f));
    }
    for (int i = 0; i < n; i++) {
        fiber *f = w->fibers[(size_t)i].get();
        unsigned bx = w->bdim.x, by = w->bdim.y;
        f->tid = uint3{(unsigned)i % bx, ((unsigned)i / bx) % by, (unsigned)i / (bx * by)};
        f->lane = i % 32;
        f->state = F_RUN;
#ifdef EMU_ASAN
        __asan_unpoison_memory_region(f->map + kGuardBytes, kStackBytes);
#endif
        if (getcontext(&f->ctx) != 0)
            sdxs_panic("cuda emulation: getcontext failed");
        f->ctx.uc_stack.ss_sp = f->map + kGuardBytes;
        f->ctx.uc_stack.ss_size = kStackBytes;
        f->ctx.uc_link = nullptr;
        makecontext(&f->ctx, fiber_main, 0);
    }
}

/* Completes the warp operation all lanes of warp `warp` are blocked on; false if not all are. */
bool release_warp(worker *w, int n, int warp)
{
    int base = warp * 32, end = std::min(n, base + 32), waiting = 0, done = 0;
    for (int i = base; i < end; i++) {
        waiting += w->fibers[(size_t)i]->state == F_WARP;
        done += w->fibers[(size_t)i]->state == F_DONE;
    }
    if (waiting == 0)
        return false;
    if (done > 0)
        sdxs_panic("cuda emulation: %s block (%u,%u,%u): lanes of warp %d exited before a warp "
                   "operation the others wait in", w->kernel, w->bid.x, w->bid.y, w->bid.z, warp);
    if (waiting < end - base)
        return false;
    if (end - base < 32)
        sdxs_panic("cuda emulation: %s: a warp operation in a partial warp (%d threads): the "
                   "block size must be a multiple of 32", w->kernel, end - base);
    warp_op op = w->fibers[(size_t)base]->op;
    for (int i = base; i < end; i++)
        if (w->fibers[(size_t)i]->op != op)
            sdxs_panic("cuda emulation: %s: lanes of warp %d wait in different warp operations",
                       w->kernel, warp);
    if (op == W_SHFL) {
        uint64_t vals[32];
        for (int i = 0; i < 32; i++)
            vals[i] = w->fibers[(size_t)(base + i)]->value;
        for (int i = 0; i < 32; i++)
            w->fibers[(size_t)(base + i)]->result = vals[w->fibers[(size_t)(base + i)]->src];
    } else if (op == W_VOTE) {
        unsigned bits = 0;
        for (int i = 0; i < 32; i++)
            bits |= (unsigned)w->fibers[(size_t)(base + i)]->pred << i;
        for (int i = 0; i < 32; i++)
            w->fibers[(size_t)(base + i)]->result = bits;
    }
    for (int i = base; i < end; i++)
        w->fibers[(size_t)i]->state = F_RUN;
    return true;
}

/* The order in which runnable fibers are resumed: a missing barrier between a write and a read
 * by another thread shows in one order or the other. */
std::atomic<bool> g_reverse{false};

void run_block(worker *w, unsigned linear_block)
{
    int n = (int)(w->bdim.x * w->bdim.y * w->bdim.z);
    w->bid = uint3{linear_block % w->gdim.x, (linear_block / w->gdim.x) % w->gdim.y,
                   linear_block / (w->gdim.x * w->gdim.y)};
    prepare_fibers(w, n);
    /* Shared memory starts as NaN bytes: a read of what no thread wrote shows up in results. */
    std::fill(w->smem.begin(), w->smem.end(), (unsigned char)0xff);

    for (;;) {
        int done = 0, at_block = 0;
        bool released = false;
        bool reverse = g_reverse.load();
        for (int k = 0; k < n; k++) {
            fiber *f = w->fibers[(size_t)(reverse ? n - 1 - k : k)].get();
            if (f->state == F_RUN)
                resume(w, f);
        }
        for (int i = 0; i < n; i++) {
            done += w->fibers[(size_t)i]->state == F_DONE;
            at_block += w->fibers[(size_t)i]->state == F_BLOCK;
        }
        if (done == n)
            return;
        for (int warp = 0; warp * 32 < n; warp++)
            released |= release_warp(w, n, warp);
        if (released)
            continue;
        if (at_block + done == n) {
            if (done > 0)
                sdxs_panic("cuda emulation: %s block (%u,%u,%u): __syncthreads after %d of %d "
                           "threads exited", w->kernel, w->bid.x, w->bid.y, w->bid.z, done, n);
            for (int i = 0; i < n; i++)
                w->fibers[(size_t)i]->state = F_RUN;
            continue;
        }
        sdxs_panic("cuda emulation: %s block (%u,%u,%u): deadlock (%d threads at __syncthreads, "
                   "%d exited, the rest in warp operations)", w->kernel, w->bid.x, w->bid.y,
                   w->bid.z, at_block, done);
    }
}

/* ---- the grid: blocks spread over a pool of OS threads ---- */

struct grid_job {
    const char *kernel;
    const std::function<void()> *body;
    dim3 grid, block;
    size_t smem;
    unsigned total;
    std::atomic<unsigned> next{0};
};

void run_blocks(grid_job *job)
{
    worker *w = this_worker();
    w->kernel = job->kernel;
    w->body = job->body;
    w->bdim = job->block;
    w->gdim = job->grid;
    w->smem.assign(job->smem + 128, 0);
    w->scratch.assign((size_t)((job->block.x * job->block.y * job->block.z + 31) / 32) * 512, 0.0f);
    for (unsigned b = job->next.fetch_add(1); b < job->total; b = job->next.fetch_add(1))
        run_block(w, b);
    w->body = nullptr;
}

class block_pool {
  public:
    block_pool()
    {
        const char *env = getenv("SDXS_EMU_THREADS");
        int n = env ? atoi(env) : (int)std::thread::hardware_concurrency();
        n = std::max(1, std::min(n, 16));
        for (int i = 1; i < n; i++)
            threads_.emplace_back([this] { loop(); });
    }

    ~block_pool()
    {
        {
            std::lock_guard<std::mutex> lock(m_);
            quit_ = true;
        }
        cv_.notify_all();
        for (auto &t : threads_)
            t.join();
    }

    void run(grid_job *job)
    {
        if (threads_.empty() || job->total < 2) {
            run_blocks(job);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(m_);
            job_ = job;
            busy_ = (int)threads_.size();
            generation_++;
        }
        cv_.notify_all();
        run_blocks(job);
        std::unique_lock<std::mutex> lock(m_);
        done_cv_.wait(lock, [this] { return busy_ == 0; });
        job_ = nullptr;
    }

  private:
    void loop()
    {
        uint64_t seen = 0;
        for (;;) {
            grid_job *job;
            {
                std::unique_lock<std::mutex> lock(m_);
                cv_.wait(lock, [&] { return quit_ || generation_ != seen; });
                if (quit_)
                    return;
                seen = generation_;
                job = job_;
            }
            run_blocks(job);
            {
                std::lock_guard<std::mutex> lock(m_);
                busy_--;
            }
            done_cv_.notify_one();
        }
    }

    std::mutex m_;
    std::condition_variable cv_, done_cv_;
    std::vector<std::thread> threads_;
    grid_job *job_ = nullptr;
    uint64_t generation_ = 0;
    int busy_ = 0;
    bool quit_ = false;
};

block_pool &pool()
{
    static block_pool p;
    return p;
}

/* ---- runtime state ---- */

thread_local cudaError_t tls_last_error = cudaSuccess;
std::mutex g_attr_lock;
std::map<const void *, int> g_smem_attr;
std::atomic<int> g_capturing{0};     /* streams now capturing */
std::atomic<unsigned> g_violations{0}; /* unsafe calls made while a capture was open */

/* A call that a GPU refuses while any stream captures (global capture mode). */
bool capture_violation()
{
    if (g_capturing.load() == 0)
        return false;
    g_violations++;
    return true;
}

double now_ms()
{
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

void *alloc_poisoned(size_t bytes)
{
    size_t n = (bytes + 255) / 256 * 256;
    void *p = aligned_alloc(256, n ? n : 256);
    if (p)
        memset(p, 0xff, n ? n : 256); /* NaN in every float type: unwritten data shows */
    return p;
}

} /* namespace */

struct emu_stream {
    bool capturing = false;
    unsigned violations_at_begin = 0;
    emu_graph *graph = nullptr;
};

struct emu_graph {
    std::vector<std::function<void()>> nodes;
};

struct emu_event {
    double ms = 0.0;
    bool recorded = false;
};

/* ---- kernel-side API ---- */

const uint3 &thread_index() { return current_fiber("threadIdx")->tid; }
const uint3 &block_index()
{
    current_fiber("blockIdx");
    return tls_worker->bid;
}
const dim3 &block_dim()
{
    current_fiber("blockDim");
    return tls_worker->bdim;
}
const dim3 &grid_dim()
{
    current_fiber("gridDim");
    return tls_worker->gdim;
}
void *dynamic_smem()
{
    current_fiber("dynamic shared memory");
    uintptr_t p = reinterpret_cast<uintptr_t>(tls_worker->smem.data());
    return reinterpret_cast<void *>((p + 127) & ~(uintptr_t)127);
}
int lane_id() { return current_fiber("a lane id")->lane; }

void syncthreads() { block_on(current_fiber("__syncthreads"), F_BLOCK); }

static void check_mask(unsigned mask, const char *what)
{
    if (mask != 0xffffffffu)
        sdxs_panic("cuda emulation: %s in %s with mask %08x: only full-warp masks are emulated",
                   what, tls_worker->kernel, mask);
}

void syncwarp(unsigned mask)
{
    fiber *f = current_fiber("__syncwarp");
    check_mask(mask, "__syncwarp");
    f->op = W_SYNC;
    block_on(f, F_WARP);
}

uint64_t shfl(unsigned mask, uint64_t value, shfl_kind kind, int arg, int width)
{
    fiber *f = current_fiber("a shuffle");
    int lane = f->lane, seg = lane / width * width, src = lane;
    check_mask(mask, "a shuffle");
    if (width < 1 || width > 32 || (width & (width - 1)))
        sdxs_panic("cuda emulation: shuffle width %d is not a power of two up to 32", width);
    switch (kind) {
    case SHFL_IDX: src = seg + ((arg % width) + width) % width; break;
    case SHFL_XOR: src = (lane ^ arg) / width * width == seg ? (lane ^ arg) : lane; break;
    case SHFL_DOWN: src = lane - seg + arg < width ? lane + arg : lane; break;
    case SHFL_UP: src = lane - seg >= arg ? lane - arg : lane; break;
    }
    f->op = W_SHFL;
    f->value = value;
    f->src = src & 31;
    block_on(f, F_WARP);
    return f->result;
}

unsigned vote(unsigned mask, bool pred, vote_kind kind)
{
    fiber *f = current_fiber("a warp vote");
    check_mask(mask, "a warp vote");
    f->op = W_VOTE;
    f->pred = pred;
    block_on(f, F_WARP);
    unsigned bits = (unsigned)f->result;
    switch (kind) {
    case VOTE_BALLOT: return bits;
    case VOTE_ANY: return bits != 0;
    case VOTE_ALL: return bits == 0xffffffffu;
    }
    return bits;
}

void wmma_check(const void *p, unsigned ldm, size_t elem_bytes, const char *what)
{
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
        sdxs_panic("cuda emulation: %s in %s: the pointer is not 32-byte aligned", what,
                   tls_worker ? tls_worker->kernel : "?");
    if ((ldm * elem_bytes) % 16 != 0)
        sdxs_panic("cuda emulation: %s in %s: ldm %u is not a multiple of 16 bytes", what,
                   tls_worker ? tls_worker->kernel : "?", ldm);
}

float *warp_scratch()
{
    fiber *f = current_fiber("wmma");
    unsigned linear = f->tid.x + tls_worker->bdim.x * (f->tid.y + tls_worker->bdim.y * f->tid.z);
    return tls_worker->scratch.data() + (size_t)(linear / 32) * 512;
}

void warp_barrier_wmma()
{
    fiber *f = current_fiber("wmma");
    f->op = W_WMMA;
    block_on(f, F_WARP);
}

/* ---- runtime API ---- */

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaError(unknown)";
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaGetLastError()
{
    cudaError_t e = tls_last_error;
    tls_last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError() { return tls_last_error; }

/* SDXS_EMU_NO_DEVICE=1 makes the emulated machine have no GPU, to test that path. */
cudaError_t cudaGetDeviceCount(int *count)
{
    const char *none = getenv("SDXS_EMU_NO_DEVICE");
    if (none && *none && strcmp(none, "0") != 0) {
        *count = 0;
        return cudaErrorNoDevice;
    }
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDevice(int *dev)
{
    *dev = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev)
{
    if (dev != 0)
        return cudaErrorInvalidValue;
    memset(prop, 0, sizeof(*prop));
    snprintf(prop->name, sizeof(prop->name), "sdxs CUDA emulation");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 4;
    prop->totalGlobalMem = (size_t)8 << 30;
    prop->sharedMemPerBlockOptin = kMaxSmem;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev)
{
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess)
        return cudaErrorInvalidValue;
    switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    default: return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = nullptr;
    if (capture_violation())
        return cudaErrorStreamCaptureUnsupported;
    *p = alloc_poisoned(bytes);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void *p)
{
    if (capture_violation())
        return cudaErrorStreamCaptureUnsupported;
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    (void)kind;
    if (capture_violation())
        return cudaErrorStreamCaptureUnsupported;
    if (bytes)
        memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t stream_submit(cudaStream_t s, std::function<void()> op)
{
    if (s && s->capturing) {
        s->graph->nodes.push_back(std::move(op));
        return cudaSuccess;
    }
    op();
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s)
{
    (void)kind;
    if (bytes == 0)
        return cudaSuccess;
    if (!dst || !src)
        return cudaErrorInvalidValue;
    return stream_submit(s, [dst, src, bytes] { memmove(dst, src, bytes); });
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s)
{
    if (bytes == 0)
        return cudaSuccess;
    if (!dst)
        return cudaErrorInvalidValue;
    return stream_submit(s, [dst, value, bytes] { memset(dst, value, bytes); });
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    *s = new emu_stream();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (s && s->capturing)
        return cudaErrorIllegalState;
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (s && s->capturing) {
        g_violations++;
        return cudaErrorStreamCaptureUnsupported;
    }
    if (capture_violation())
        return cudaErrorStreamCaptureUnsupported;
    return cudaSuccess; /* the emulated stream has already run everything */
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    (void)mode;
    if (!s || s->capturing)
        return cudaErrorIllegalState;
    s->capturing = true;
    s->graph = new emu_graph();
    s->violations_at_begin = g_violations.load();
    g_capturing++;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph)
{
    *graph = nullptr;
    if (!s || !s->capturing)
        return cudaErrorIllegalState;
    s->capturing = false;
    g_capturing--;
    if (g_violations.load() != s->violations_at_begin) {
        delete s->graph;
        s->graph = nullptr;
        return cudaErrorStreamCaptureInvalidated;
    }
    *graph = s->graph;
    s->graph = nullptr;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    (void)flags;
    if (!graph)
        return cudaErrorInvalidValue;
    *exec = new emu_graph(*graph);
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    if (!exec)
        return cudaErrorInvalidValue;
    if (s && s->capturing)
        return cudaErrorStreamCaptureUnsupported;
    for (auto &node : exec->nodes)
        node();
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags)
{
    (void)flags;
    *ev = new emu_event();
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    delete ev;
    return cudaSuccess;
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t ev, cudaStream_t s, unsigned flags)
{
    if (!ev)
        return cudaErrorInvalidResourceHandle;
    if (s && s->capturing && !(flags & cudaEventRecordExternal)) {
        /* A plain record inside a capture only orders work; it never takes a time. */
        ev->recorded = false;
        return cudaSuccess;
    }
    return stream_submit(s, [ev] {
        ev->ms = now_ms();
        ev->recorded = true;
    });
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s)
{
    return cudaEventRecordWithFlags(ev, s, cudaEventRecordDefault);
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    if (!ev)
        return cudaErrorInvalidResourceHandle;
    if (capture_violation())
        return cudaErrorStreamCaptureUnsupported;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!start || !end || !start->recorded || !end->recorded)
        return cudaErrorInvalidResourceHandle;
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

cudaError_t func_set_smem(const void *func, int bytes)
{
    if (bytes < 0 || (size_t)bytes > kMaxSmem)
        return cudaErrorInvalidValue;
    std::lock_guard<std::mutex> lock(g_attr_lock);
    g_smem_attr[func] = bytes;
    return cudaSuccess;
}

/* The kernels that have run, as the launches name them ("k_conv_wmma<T, true>"), so tests can
 * check that every kernel was exercised. */
static std::mutex g_ran_lock;
static std::set<std::string> g_ran;

static void note_ran(const char *name)
{
    std::string n(name);
    if (n.size() >= 2 && n.front() == '(' && n.back() == ')')
        n = n.substr(1, n.size() - 2);
    std::lock_guard<std::mutex> lock(g_ran_lock);
    g_ran.insert(n);
}

void launch_body(const char *name, const void *func, dim3 grid, dim3 block, size_t smem,
                 cudaStream_t s, std::function<void()> body)
{
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    size_t limit = kDefaultSmem;
    {
        std::lock_guard<std::mutex> lock(g_attr_lock);
        auto it = g_smem_attr.find(func);
        if (it != g_smem_attr.end())
            limit = std::max(limit, (size_t)it->second);
    }
    if (threads == 0 || threads > (unsigned long long)kMaxThreads || block.z > 64 ||
        grid.x == 0 || grid.x > 0x7fffffffu || grid.y == 0 || grid.y > 65535 || grid.z == 0 ||
        grid.z > 65535) {
        SDXS_ERROR("cuda-emu", "%s: bad launch geometry grid (%u,%u,%u) block (%u,%u,%u)", name,
                   grid.x, grid.y, grid.z, block.x, block.y, block.z);
        tls_last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (smem > limit) {
        SDXS_ERROR("cuda-emu", "%s: %zu bytes of dynamic shared memory over the limit %zu", name,
                   smem, limit);
        tls_last_error = cudaErrorInvalidValue;
        return;
    }
    auto shared_body = std::make_shared<std::function<void()>>(std::move(body));
    cudaError_t e = stream_submit(s, [name, grid, block, smem, shared_body] {
        note_ran(name);
        grid_job job;
        job.kernel = name;
        job.body = shared_body.get();
        job.grid = grid;
        job.block = block;
        job.smem = smem;
        job.total = grid.x * grid.y * grid.z;
        pool().run(&job);
    });
    if (e != cudaSuccess)
        tls_last_error = e;
}

/* ---- element access for the library emulations ---- */

namespace {

float load_elem(const void *p, int type, size_t i)
{
    const uint16_t *h = static_cast<const uint16_t *>(p);
    switch (type) {
    case CUDA_R_32F: return static_cast<const float *>(p)[i];
    case CUDA_R_16F: return sdxs_halfconv::f16_to_f32(h[i]);
    case CUDA_R_16BF: return sdxs_halfconv::bf16_to_f32(h[i]);
    }
    sdxs_panic("cuda emulation: element type %d", type);
}

void store_elem(void *p, int type, size_t i, float v)
{
    uint16_t *h = static_cast<uint16_t *>(p);
    switch (type) {
    case CUDA_R_32F: static_cast<float *>(p)[i] = v; return;
    case CUDA_R_16F: h[i] = sdxs_halfconv::f32_to_f16(v); return;
    case CUDA_R_16BF: h[i] = sdxs_halfconv::f32_to_bf16(v); return;
    }
    sdxs_panic("cuda emulation: element type %d", type);
}

bool float_type(int type) { return type == CUDA_R_32F || type == CUDA_R_16F || type == CUDA_R_16BF; }

} /* namespace */

/* ---- cuBLASLt ---- */

struct emu_lt {
    int unused = 0;
};
struct emu_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    int32_t bias_type = -1; /* -1: the type of D */
};
struct emu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};
struct emu_lt_pref {
    uint64_t max_workspace = 0;
};

/* What the emulated algorithm asks of the workspace, so the backend's plumbing gets exercised. */
static const size_t kLtWorkspace = 4096;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new emu_lt();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale)
{
    *d = new emu_lt_desc();
    (*d)->compute = compute;
    (*d)->scale = scale;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size)
{
    void *dst = nullptr;
    size_t want = 0;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: dst = &d->ta, want = 4; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: dst = &d->tb, want = 4; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: dst = &d->epilogue, want = 4; break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: dst = &d->bias, want = sizeof(void *); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: dst = &d->bias_type, want = 4; break;
    }
    if (!dst || size != want)
        return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(dst, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld)
{
    if (ld < (int64_t)rows || !float_type(type))
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new emu_lt_pref();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size)
{
    if (attr != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || size != 8)
        return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(&p->max_workspace, buf, 8);
    return CUBLAS_STATUS_SUCCESS;
}

/* The checks cuBLASLt makes on a column-major D = op(A) op(B) + C problem, for the types the
 * backend uses. */
static bool lt_valid(const emu_lt_desc *op, const emu_lt_layout *a, const emu_lt_layout *b,
                     const emu_lt_layout *c, const emu_lt_layout *d)
{
    uint64_t m = d->rows, n = d->cols;
    uint64_t am = op->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = op->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t bk = op->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = op->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (op->compute != CUBLAS_COMPUTE_32F || op->scale != CUDA_R_32F)
        return false;
    if (a->type != b->type || c->type != d->type || c->rows != m || c->cols != n)
        return false;
    if (a->type == CUDA_R_32F && d->type != CUDA_R_32F)
        return false;
    if (am != m || bn != n || ak != bk)
        return false;
    if (op->epilogue != CUBLASLT_EPILOGUE_DEFAULT && op->epilogue != CUBLASLT_EPILOGUE_RELU &&
        op->epilogue != CUBLASLT_EPILOGUE_BIAS && op->epilogue != CUBLASLT_EPILOGUE_RELU_BIAS)
        return false;
    if (op->bias_type != -1 && op->bias_type != d->type && op->bias_type != CUDA_R_32F)
        return false;
    return true;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned)
{
    *returned = 0;
    if (!h || requested < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!lt_valid(op, a, b, c, d))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    memset(&results[0], 0, sizeof(results[0]));
    results[0].workspaceSize = pref->max_workspace >= kLtWorkspace ? kLtWorkspace : 0;
    results[0].algo.data[0] = results[0].workspaceSize;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                              const void *a, cublasLtMatrixLayout_t adesc, const void *b,
                              cublasLtMatrixLayout_t bdesc, const void *beta, const void *c,
                              cublasLtMatrixLayout_t cdesc, void *d, cublasLtMatrixLayout_t ddesc,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t s)
{
    if (!h || !algo || !alpha || !beta || !a || !b || !d)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!lt_valid(op, adesc, bdesc, cdesc, ddesc))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (algo->data[0] > workspace_bytes || (algo->data[0] && !workspace))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
    if (be != 0.0f && !c)
        return CUBLAS_STATUS_INVALID_VALUE;
    emu_lt_desc o = *op;
    emu_lt_layout la = *adesc, lb = *bdesc, lc = *cdesc, ld = *ddesc;
    cudaError_t e = stream_submit(s, [=] {
        uint64_t m = ld.rows, n = ld.cols, k = o.ta == CUBLAS_OP_N ? la.cols : la.rows;
        int bias_type = o.bias_type == -1 ? (int)ld.type : o.bias_type;
        bool bias = o.epilogue == CUBLASLT_EPILOGUE_BIAS || o.epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
        bool relu = o.epilogue == CUBLASLT_EPILOGUE_RELU || o.epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
        std::vector<float> arow(k);
        for (uint64_t i = 0; i < m; i++) {
            for (uint64_t kk = 0; kk < k; kk++)
                arow[kk] = o.ta == CUBLAS_OP_N ? load_elem(a, la.type, i + kk * (uint64_t)la.ld)
                                                : load_elem(a, la.type, kk + i * (uint64_t)la.ld);
            for (uint64_t j = 0; j < n; j++) {
                float acc = 0.0f, v;
                for (uint64_t kk = 0; kk < k; kk++)
                    acc += arow[kk] * (o.tb == CUBLAS_OP_N
                                           ? load_elem(b, lb.type, kk + j * (uint64_t)lb.ld)
                                           : load_elem(b, lb.type, j + kk * (uint64_t)lb.ld));
                v = al * acc;
                if (be != 0.0f)
                    v += be * load_elem(c, lc.type, i + j * (uint64_t)lc.ld);
                if (bias)
                    v += load_elem(o.bias, bias_type, i);
                if (relu)
                    v = v > 0.0f ? v : 0.0f;
                store_elem(d, ld.type, i + j * (uint64_t)ld.ld, v);
            }
        }
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

/* ---- cuDNN ---- */

struct emu_dnn {
    cudaStream_t stream = nullptr;
};
struct emu_dnn_tensor {
    bool set = false;
    cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    int n = 0, c = 0, h = 0, w = 0;
};
struct emu_dnn_filter {
    bool set = false;
    cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    int k = 0, c = 0, h = 0, w = 0;
};
struct emu_dnn_conv {
    bool set = false;
    int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
    cudnnConvolutionMode_t mode = CUDNN_CONVOLUTION;
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

const char *cudnnGetErrorString(cudnnStatus_t s)
{
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_(unknown)";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h)
{
    *h = new emu_dnn();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h)
{
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d)
{
    *d = new emu_dnn_tensor();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d)
{
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w)
{
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return CUDNN_STATUS_BAD_PARAM;
    *d = emu_dnn_tensor{true, format, type, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d)
{
    *d = new emu_dnn_filter();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d)
{
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w)
{
    if (k < 1 || c < 1 || h < 1 || w < 1)
        return CUDNN_STATUS_BAD_PARAM;
    *d = emu_dnn_filter{true, format, type, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d)
{
    *d = new emu_dnn_conv();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d)
{
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
                                              int pad_w, int u, int v, int dil_h, int dil_w,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute)
{
    if (pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dil_h < 1 || dil_w < 1)
        return CUDNN_STATUS_BAD_PARAM;
    cudnnMathType_t math = d->math;
    *d = emu_dnn_conv{true, pad_h, pad_w, u, v, dil_h, dil_w, mode, compute, math};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m)
{
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t conv,
                                                    cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int *n, int *c,
                                                    int *h, int *wo)
{
    if (!conv->set || !x->set || !w->set || x->c != w->c)
        return CUDNN_STATUS_BAD_PARAM;
    *n = x->n;
    *c = w->k;
    *h = (x->h + 2 * conv->pad_h - ((w->h - 1) * conv->dil_h + 1)) / conv->u + 1;
    *wo = (x->w + 2 * conv->pad_w - ((w->w - 1) * conv->dil_w + 1)) / conv->v + 1;
    return CUDNN_STATUS_SUCCESS;
}

static int dnn_to_cuda_type(cudnnDataType_t t)
{
    switch (t) {
    case CUDNN_DATA_FLOAT: return CUDA_R_32F;
    case CUDNN_DATA_HALF: return CUDA_R_16F;
    case CUDNN_DATA_BFLOAT16: return CUDA_R_16BF;
    }
    return -1;
}

/* The configurations the emulation computes: NHWC data and filter of one type, float compute,
 * cross-correlation without dilation, and y of the shape the descriptors give. */
static cudnnStatus_t dnn_check(const emu_dnn_tensor *x, const emu_dnn_filter *w,
                               const emu_dnn_conv *conv, const emu_dnn_tensor *y)
{
    int n, c, h, wo;
    if (!x->set || !w->set || !conv->set || !y->set)
        return CUDNN_STATUS_BAD_PARAM;
    if (x->format != CUDNN_TENSOR_NHWC || y->format != CUDNN_TENSOR_NHWC ||
        w->format != CUDNN_TENSOR_NHWC || conv->mode != CUDNN_CROSS_CORRELATION ||
        conv->dil_h != 1 || conv->dil_w != 1 || conv->compute != CUDNN_DATA_FLOAT)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (x->type != w->type || y->type != x->type || dnn_to_cuda_type(x->type) < 0)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (cudnnGetConvolution2dForwardOutputDim(const_cast<emu_dnn_conv *>(conv),
                                              const_cast<emu_dnn_tensor *>(x),
                                              const_cast<emu_dnn_filter *>(w), &n, &c, &h,
                                              &wo) != CUDNN_STATUS_SUCCESS)
        return CUDNN_STATUS_BAD_PARAM;
    if (y->n != n || y->c != c || y->h != h || y->w != wo)
        return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

/* Workspace the emulated algorithms ask for: none for IMPLICIT_GEMM, some for the others. */
static size_t dnn_workspace(cudnnConvolutionFwdAlgo_t algo, const emu_dnn_filter *w)
{
    switch (algo) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return 0;
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return (size_t)w->h * w->w * 256;
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return (size_t)1 << 40; /* never fits */
    }
    return 0;
}

static void dnn_perf_list(const emu_dnn_filter *w, size_t workspace_limit, int requested,
                          int *returned, cudnnConvolutionFwdAlgoPerf_t *perf)
{
    static const cudnnConvolutionFwdAlgo_t order[] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_GEMM};
    int n = 0;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && n < requested; i++, n++) {
        memset(&perf[n], 0, sizeof(perf[n]));
        perf[n].algo = order[i];
        perf[n].memory = dnn_workspace(order[i], w);
        perf[n].status = perf[n].memory <= workspace_limit ? CUDNN_STATUS_SUCCESS
                                                           : CUDNN_STATUS_NOT_SUPPORTED;
        perf[n].time = 0.1f * (float)(i + 1);
        perf[n].determinism = CUDNN_DETERMINISTIC;
        perf[n].mathType = CUDNN_DEFAULT_MATH;
    }
    *returned = n;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w,
                                                     cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested,
                                                     int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf)
{
    cudnnStatus_t st = dnn_check(x, w, conv, y);
    if (!h || st != CUDNN_STATUS_SUCCESS)
        return st != CUDNN_STATUS_SUCCESS ? st : CUDNN_STATUS_BAD_PARAM;
    dnn_perf_list(w, (size_t)-1, requested, returned, perf);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void *x, cudnnFilterDescriptor_t wd,
    const void *w, cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t yd, void *y,
    int requested, int *returned, cudnnConvolutionFwdAlgoPerf_t *perf, void *workspace,
    size_t workspace_bytes)
{
    cudnnStatus_t st = dnn_check(xd, wd, conv, yd);
    if (!h || !x || !w || !y)
        return CUDNN_STATUS_BAD_PARAM;
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (capture_violation()) /* it times the algorithms, which synchronises */
        return CUDNN_STATUS_EXECUTION_FAILED;
    dnn_perf_list(wd, workspace ? workspace_bytes : 0, requested, returned, perf);
    /* Trial runs leave y overwritten. */
    memset(y, 0xff, (size_t)yd->n * yd->c * yd->h * yd->w * (yd->type == CUDNN_DATA_FLOAT ? 4 : 2));
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w,
                                                      cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes)
{
    cudnnStatus_t st = dnn_check(x, w, conv, y);
    if (!h || st != CUDNN_STATUS_SUCCESS)
        return st != CUDNN_STATUS_SUCCESS ? st : CUDNN_STATUS_BAD_PARAM;
    *bytes = dnn_workspace(algo, w);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w,
                                      cudnnConvolutionDescriptor_t convd,
                                      cudnnConvolutionFwdAlgo_t algo, void *workspace,
                                      size_t workspace_bytes, const void *beta,
                                      cudnnTensorDescriptor_t yd, void *y)
{
    cudnnStatus_t st = dnn_check(xd, wd, convd, yd);
    size_t need = dnn_workspace(algo, wd);
    if (!h || !alpha || !beta || !x || !w || !y)
        return CUDNN_STATUS_BAD_PARAM;
    if (st != CUDNN_STATUS_SUCCESS)
        return st;
    if (need > workspace_bytes || (need && !workspace))
        return CUDNN_STATUS_BAD_PARAM;
    float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
    emu_dnn_tensor xs = *xd, ys = *yd;
    emu_dnn_filter ws = *wd;
    emu_dnn_conv cs = *convd;
    cudaError_t e = stream_submit(h->stream, [=] {
        int type = dnn_to_cuda_type(xs.type);
        size_t xn = (size_t)xs.n * xs.h * xs.w * xs.c, wn = (size_t)ws.k * ws.h * ws.w * ws.c;
        std::vector<float> xf(xn), wf(wn);
        for (size_t i = 0; i < xn; i++)
            xf[i] = load_elem(x, type, i);
        for (size_t i = 0; i < wn; i++)
            wf[i] = load_elem(w, type, i);
        for (int b = 0; b < ys.n; b++)
            for (int oy = 0; oy < ys.h; oy++)
                for (int ox = 0; ox < ys.w; ox++)
                    for (int k = 0; k < ys.c; k++) {
                        float acc = 0.0f;
                        size_t o = (((size_t)b * ys.h + oy) * ys.w + ox) * ys.c + k;
                        for (int r = 0; r < ws.h; r++) {
                            int iy = oy * cs.u - cs.pad_h + r;
                            if (iy < 0 || iy >= xs.h)
                                continue;
                            for (int s = 0; s < ws.w; s++) {
                                int ix = ox * cs.v - cs.pad_w + s;
                                if (ix < 0 || ix >= xs.w)
                                    continue;
                                const float *xp = &xf[(((size_t)b * xs.h + iy) * xs.w + ix) * xs.c];
                                const float *wp = &wf[(((size_t)k * ws.h + r) * ws.w + s) * ws.c];
                                for (int c = 0; c < xs.c; c++)
                                    acc += xp[c] * wp[c];
                            }
                        }
                        float v = al * acc;
                        if (be != 0.0f)
                            v += be * load_elem(y, type, o);
                        store_elem(y, type, o, v);
                    }
    });
    return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

} /* namespace sdxs_emu */

extern "C" void sdxs_cuda_emu_reverse_order(bool reverse) { sdxs_emu::g_reverse = reverse; }

extern "C" const char *sdxs_cuda_emu_kernels_ran(void)
{
    static std::string list;
    std::lock_guard<std::mutex> lock(sdxs_emu::g_ran_lock);
    list.clear();
    for (const std::string &n : sdxs_emu::g_ran)
        list += n + "\n";
    return list.c_str();
}
