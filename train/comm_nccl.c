/* train/: the NCCL collective for the GPU trainer, one process per GPU, under any launcher
 * (launch.h): the GPU is the local rank's; rank 0 makes the NCCL id and comm->share_id hands it
 * out (MPI_Bcast where MPI started the job, else the TCP rendezvous); then every reduction
 * runs on the GPU. Device buffers are reduced on comm->cuda_stream without waiting; host
 * buffers (the loss, a validation loss) go through a small device bounce buffer and wait.
 * The communicator is non-blocking and every wait on it has a deadline (--comm-timeout): a
 * rank whose peer died aborts it and exits with one line instead of spinning in a collective
 * for ever. Overlapped buckets (start_allreduce_sum) run on a side stream. The grid's groups
 * (grid.h) are ncclCommSplit's sub-communicators of the world's, watched the same way. The
 * pipeline's point-to-point sends (sendrecv) are a grouped ncclSend and ncclRecv. */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "train/comm.h"
#include "train/gpt_cuda.h"
#include "train/settings.h"

/* The collectives kept for the watchdog's line: the last NR_OPS enqueued, each with an event
 * recorded behind it on its stream, so that a wait that times out names the oldest one not
 * done (the one a dead peer never joined). */
#define NR_OPS 256
/* the grid's groups: data, tensor and pipeline at most */
#define NR_SUBS 4

struct nccl_op {
	cudaEvent_t done;
	const char *what;       /* "all-reduce", ... */
	size_t count;           /* elements */
	unsigned long long seq; /* this rank's collectives, from 1 */
};

/* One communicator per process and everything that waits on it. The trainer's thread makes
 * every call: NCCL takes no concurrent calls on one communicator. */
static struct {
	ncclComm_t comm; /* the world's */
	/* the sub-communicators split from it that are not done yet: every wait asks each of
	 * them for an error, and the end of a rank aborts them all */
	ncclComm_t subs[NR_SUBS];
	int nr_subs;
	int rank;         /* in the world, in every line said */
	double timeout_s; /* --comm-timeout: the longest any wait on the communicator lasts */
	float *bounce;    /* device buffer for host reductions */
	size_t bounce_n;
	/* Overlap: each bucket is reduced on side after the work queued on the compute stream up
	 * to its start (ready, recorded there); wait_all orders the compute stream after side's
	 * work so far (side_done). side_busy: buckets started since the last wait_all. */
	cudaStream_t side;
	cudaEvent_t ready, side_done;
	bool side_busy;
	double side_since;          /* when the first of them started */
	struct nccl_op ops[NR_OPS]; /* ring: collective seq at ops[(seq - 1) % NR_OPS] */
	unsigned long long nr_ops;
} nc;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The communicator aborted (it stops the kernels spinning on it) and the process ended. The
 * alarm bounds the abort and the exit: a driver that does not let go still ends with a
 * non-zero status (SIGALRM's default action). */
static void end_rank(int status) __attribute__((noreturn));
static void end_rank(int status)
{
	fflush(stderr);
	alarm(10);
	for (int i = 0; i < nc.nr_subs; i++)
		ncclCommAbort(nc.subs[i]);
	nc.nr_subs = 0;
	if (nc.comm)
		ncclCommAbort(nc.comm);
	nc.comm = NULL;
	exit(status);
}

/* The watchdog's end: one line naming this rank, the collective and how long it was waited
 * for; r is the error NCCL reported, or ncclSuccess where the deadline passed. */
static void give_up(const char *what, double waited_s, ncclResult_t r) __attribute__((noreturn));
static void give_up(const char *what, double waited_s, ncclResult_t r)
{
	if (r == ncclSuccess)
		fprintf(stderr,
			"ferry train: nccl: rank %d: %s not done after %.1f s (--comm-timeout %.0f): "
			"a rank died or stopped; aborting\n",
			nc.rank, what, waited_s, nc.timeout_s);
	else
		fprintf(stderr,
			"ferry train: nccl: rank %d: %s failed after %.1f s: %s; aborting\n",
			nc.rank, what, waited_s, ncclGetErrorString(r));
	end_rank(1);
}

static void cuda_call(cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return;
	fprintf(stderr, "ferry train: nccl: rank %d: CUDA error in %s: %s\n", nc.rank, what,
		cudaGetErrorString(e));
	end_rank(1);
}

/* The communicator c's collectives run on: its group's, else the world's. */
static ncclComm_t ncomm(const struct comm *c)
{
	return c->group ? (ncclComm_t)c->group : nc.comm;
}

/* The state of cm: an error, ncclInProgress or ncclSuccess. */
static ncclResult_t comm_state(ncclComm_t cm)
{
	ncclResult_t st = ncclSuccess, q = ncclCommGetAsyncError(cm, &st);
	return q != ncclSuccess ? q : st;
}

/* The first error any of this process's communicators met (ncclSuccess: none): a wait on a
 * stream may be held up by a collective of any of them. */
static ncclResult_t comms_error(void)
{
	for (int i = -1; i < nc.nr_subs; i++) {
		ncclResult_t st = comm_state(i < 0 ? nc.comm : nc.subs[i]);
		if (st != ncclSuccess && st != ncclInProgress)
			return st;
	}
	return ncclSuccess;
}

/* The oldest kept collective not done yet, in words. */
static void describe_pending(char *line, size_t len)
{
	unsigned long long first = nc.nr_ops > NR_OPS ? nc.nr_ops - NR_OPS : 0;
	for (unsigned long long i = first; i < nc.nr_ops; i++) {
		const struct nccl_op *op = &nc.ops[i % NR_OPS];
		if (cudaEventQuery(op->done) == cudaErrorNotReady) {
			snprintf(line, len, "%s #%llu (%zu elements)", op->what, op->seq,
				op->count);
			return;
		}
	}
	snprintf(line, len, "the GPU work after collective #%llu", nc.nr_ops);
}

/* A call on the non-blocking communicator cm returned r. ncclInProgress: it goes on in the
 * background, and NCCL takes no other call, nor work on its streams, until the state is
 * ncclSuccess; polled until then, within the deadline. what names the call for the line. */
static void settle(ncclComm_t cm, ncclResult_t r, const char *what)
{
	double t0 = now_s();
	while (r == ncclInProgress) {
		if (now_s() - t0 > nc.timeout_s)
			give_up(what, now_s() - t0, ncclSuccess);
		sched_yield();
		r = comm_state(cm);
	}
	if (r != ncclSuccess)
		give_up(what, now_s() - t0, r);
}

/* After a collective's call on cm returned r on stream s: its state settled, an event behind
 * it. */
static void enqueued(ncclComm_t cm, ncclResult_t r, const char *what, size_t count, cudaStream_t s)
{
	struct nccl_op *op = &nc.ops[nc.nr_ops % NR_OPS];
	if (r != ncclSuccess) {
		char line[160];
		snprintf(line, sizeof(line), "%s #%llu (%zu elements)", what, nc.nr_ops + 1, count);
		settle(cm, r, line);
	}
	op->what = what;
	op->count = count;
	op->seq = ++nc.nr_ops;
	cuda_call(cudaEventRecord(op->done, s), "cudaEventRecord");
}

/* The host waits for stream s, within the deadline, asking NCCL for an error every
 * millisecond. A poll, as NCCL's non-blocking model is: cudaStreamSynchronize takes no
 * deadline, and its default wait spins on a core as this does. */
static void wait_stream(cudaStream_t s)
{
	double t0 = now_s(), next_check = t0 + 1e-3;
	char line[160];
	cudaError_t e;
	while ((e = cudaStreamQuery(s)) == cudaErrorNotReady) {
		double t = now_s();
		if (t >= next_check) {
			ncclResult_t st = comms_error();
			if (st != ncclSuccess) {
				describe_pending(line, sizeof(line));
				give_up(line, t - t0, st);
			}
			next_check = t + 1e-3;
		}
		if (t - t0 > nc.timeout_s) {
			describe_pending(line, sizeof(line));
			give_up(line, t - t0, ncclSuccess);
		}
		sched_yield();
	}
	cuda_call(e, "a wait for the GPU");
}

/* The bounce buffer grown to n floats; no device memory ends the process with one line. */
static void bounce_reserve(size_t n)
{
	if (n <= nc.bounce_n)
		return;
	cudaFree(nc.bounce);
	nc.bounce = NULL;
	nc.bounce_n = 0;
	cuda_call(cudaMalloc((void **)&nc.bounce, n * sizeof(float)), "cudaMalloc");
	nc.bounce_n = n;
}

/* --comm-timeout from the command line comm_init was given: the trainer's own parse comes
 * later, and a command line it refuses starts no NCCL (comm.c runs one process then). */
static double comm_timeout_s(int argc, char **argv)
{
	struct train_settings s;
	struct train_opts o;
	char err[256];
	if (settings_parse_args(argc, argv, &s, &o, err, sizeof(err)) != 0)
		return 300.0;
	return (double)o.comm_timeout_s;
}

/* The side stream of the overlap and the events: at the highest priority, as DDP's, so that
 * the buckets' kernels are scheduled between backward's. */
static int make_streams(char *err, size_t errlen)
{
	int lo = 0, hi = 0;
	cudaDeviceGetStreamPriorityRange(&lo, &hi);
	if (cudaStreamCreateWithPriority(&nc.side, cudaStreamNonBlocking, hi) != cudaSuccess ||
		cudaEventCreateWithFlags(&nc.ready, cudaEventDisableTiming) != cudaSuccess ||
		cudaEventCreateWithFlags(&nc.side_done, cudaEventDisableTiming) != cudaSuccess)
		goto fail;
	for (int i = 0; i < NR_OPS; i++)
		if (cudaEventCreateWithFlags(&nc.ops[i].done, cudaEventDisableTiming) !=
			cudaSuccess)
			goto fail;
	return 0;
fail:
	snprintf(err, errlen, "rank %d: cannot create CUDA streams and events", nc.rank);
	return -ENODEV;
}

static int nccl_init(struct comm *c, int *argc, char ***argv, char *err, size_t errlen)
{
	const struct launch *l = &c->launch;
	/* static: a non-blocking setup goes on after the call returns */
	static ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
	int nr_devices = 0, device, rc;
	ncclResult_t r, q;
	ncclUniqueId id;

	nc.rank = l->rank;
	nc.timeout_s = comm_timeout_s(*argc, *argv);
	if (cudaGetDeviceCount(&nr_devices) != cudaSuccess || nr_devices == 0) {
		snprintf(err, errlen, "rank %d: no CUDA device", l->rank);
		return -ENODEV;
	}
	/* One GPU per rank, by local rank. A node that shows each rank only its own GPU
	 * (CUDA_VISIBLE_DEVICES per task) has one device and every local rank takes it; more
	 * ranks than the GPUs it shows would put two ranks on one GPU. */
	if (nr_devices > 1 && l->local_world_size > nr_devices) {
		snprintf(err, errlen, "%s started %d ranks on this node, which has %d GPUs",
			l->name, l->local_world_size, nr_devices);
		return -EINVAL;
	}
	/* The trainer's and the loader's device: a communicator on another one would be handed
	 * buffers it cannot use. */
	device = gpt2_cuda_local_device();
	if (cudaSetDevice(device) != cudaSuccess) {
		snprintf(err, errlen, "rank %d: cannot use GPU %d", l->rank, device);
		return -ENODEV;
	}
	if ((rc = make_streams(err, errlen)) < 0)
		return rc;
	memset(&id, 0, sizeof(id));
	if (l->rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess) {
		snprintf(err, errlen, "rank 0: ncclGetUniqueId: %s", ncclGetErrorString(r));
		return -EIO;
	}
	rc = c->share_id(c, &id, sizeof(id), err, errlen);
	if (rc < 0)
		return rc;
	/* Non-blocking: the setup and every collective return at once (ncclInProgress), and
	 * only a communicator made so can be aborted while a peer is missing. */
	config.blocking = 0;
	double t0 = now_s();
	r = ncclCommInitRankConfig(&nc.comm, l->world_size, id, l->rank, &config);
	while (r == ncclInProgress && now_s() - t0 <= nc.timeout_s) {
		sched_yield();
		if ((q = ncclCommGetAsyncError(nc.comm, &r)) != ncclSuccess)
			r = q;
	}
	if (r != ncclSuccess) {
		if (r == ncclInProgress)
			snprintf(err, errlen,
				"rank %d: the communicator of %d ranks not set up after %.1f s "
				"(--comm-timeout %.0f)",
				l->rank, l->world_size, now_s() - t0, nc.timeout_s);
		else
			snprintf(err, errlen, "rank %d: ncclCommInitRankConfig: %s", l->rank,
				ncclGetErrorString(r));
		if (nc.comm)
			ncclCommAbort(nc.comm);
		nc.comm = NULL;
		return r == ncclInProgress ? -ETIMEDOUT : -EIO;
	}
	c->rank = l->rank;
	c->world_size = l->world_size;
	return 0;
}

static bool is_device(const void *buf)
{
	struct cudaPointerAttributes attr;
	if (cudaPointerGetAttributes(&attr, buf) == cudaSuccess &&
		attr.type == cudaMemoryTypeDevice)
		return true;
	cudaGetLastError(); /* a host pointer may leave an error behind on old runtimes */
	return false;
}

static void nccl_allreduce_sum(struct comm *c, float *buf, size_t n)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	if (is_device(buf)) {
		enqueued(ncomm(c), ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, ncomm(c), s),
			"all-reduce", n, s);
		return;
	}
	bounce_reserve(n);
	cuda_call(cudaMemcpyAsync(nc.bounce, buf, n * sizeof(float), cudaMemcpyHostToDevice, s),
		"cudaMemcpyAsync");
	enqueued(ncomm(c), ncclAllReduce(nc.bounce, nc.bounce, n, ncclFloat, ncclSum, ncomm(c), s),
		"all-reduce", n, s);
	cuda_call(cudaMemcpyAsync(buf, nc.bounce, n * sizeof(float), cudaMemcpyDeviceToHost, s),
		"cudaMemcpyAsync");
	wait_stream(s);
}

/* The tensor-parallel activations of a bf16 GPU run (device memory, in place), in bf16: on 2
 * ranks the sum a + b is rounded to bf16 once, as an fp32 all-reduce cast back would round it,
 * at half the bytes and without the two casts. */
static void nccl_allreduce_sum_bf16(struct comm *c, void *buf, size_t n)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	enqueued(ncomm(c), ncclAllReduce(buf, buf, n, ncclBfloat16, ncclSum, ncomm(c), s),
		"all-reduce (bf16)", n, s);
}

/* Small host tables only (the ranks' agreement at start): a device buffer of their own, freed
 * at once, so the float bounce buffer keeps its size. */
static void nccl_allreduce_max_u64(struct comm *c, uint64_t *buf, size_t n)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	uint64_t *d = NULL;
	cuda_call(cudaMalloc((void **)&d, n * sizeof(*d)), "cudaMalloc");
	cuda_call(cudaMemcpyAsync(d, buf, n * sizeof(*d), cudaMemcpyHostToDevice, s),
		"cudaMemcpyAsync");
	enqueued(ncomm(c), ncclAllReduce(d, d, n, ncclUint64, ncclMax, ncomm(c), s),
		"all-reduce (max)", n, s);
	cuda_call(cudaMemcpyAsync(buf, d, n * sizeof(*d), cudaMemcpyDeviceToHost, s),
		"cudaMemcpyAsync");
	wait_stream(s);
	cudaFree(d);
}

/* Device buffers only (the GPU trainer's gradients and parameters), in place: NCCL's in-place
 * slice is the rank's own, where comm.h puts it. Enqueued on comm->cuda_stream; no wait. */
static void nccl_reduce_scatter_sum(struct comm *c, float *buf, size_t count)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	enqueued(ncomm(c),
		ncclReduceScatter(buf, buf + (size_t)c->rank * count, count, ncclFloat, ncclSum,
			ncomm(c), s),
		"reduce-scatter", count, s);
}

/* Device buffers enqueued without a wait; a host buffer (a sharded checkpoint's table of the
 * shards) through the bounce buffer, waited for. */
static void nccl_allgather(struct comm *c, float *buf, size_t count)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	size_t n = count * (size_t)c->world_size, mine = (size_t)c->rank * count;
	if (is_device(buf)) {
		enqueued(ncomm(c), ncclAllGather(buf + mine, buf, count, ncclFloat, ncomm(c), s),
			"all-gather", count, s);
		return;
	}
	bounce_reserve(n);
	cuda_call(cudaMemcpyAsync(nc.bounce + mine, buf + mine, count * sizeof(float),
			  cudaMemcpyHostToDevice, s),
		"cudaMemcpyAsync");
	enqueued(ncomm(c),
		ncclAllGather(nc.bounce + mine, nc.bounce, count, ncclFloat, ncomm(c), s),
		"all-gather", count, s);
	cuda_call(cudaMemcpyAsync(buf, nc.bounce, n * sizeof(float), cudaMemcpyDeviceToHost, s),
		"cudaMemcpyAsync");
	wait_stream(s);
}

/* One send and one receive in a group on stream s, so that two neighbours sending to each
 * other at once never wait on each other (NCCL pairs them as MPI_Sendrecv does); bytes moved as
 * ncclChar. Every call's result settled (a non-blocking communicator answers ncclInProgress
 * until the group is enqueued). */
static void p2p(struct comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf,
	size_t rbytes, int src, cudaStream_t s)
{
	ncclComm_t cm = ncomm(c);
	ncclResult_t r = ncclGroupStart(), q = ncclSuccess;
	if (r == ncclSuccess && dest >= 0)
		r = ncclSend(sbuf, sbytes, ncclChar, dest, cm, s);
	if ((r == ncclSuccess || r == ncclInProgress) && src >= 0)
		q = ncclRecv(rbuf, rbytes, ncclChar, src, cm, s);
	if (q != ncclSuccess && q != ncclInProgress)
		r = q;
	/* the group is closed whatever went wrong inside it */
	q = ncclGroupEnd();
	if (r == ncclSuccess || r == ncclInProgress)
		r = q;
	enqueued(cm, r,
		dest >= 0 && src >= 0 ? "send/receive"
		: dest >= 0           ? "send"
				      : "receive",
		dest >= 0 ? sbytes : rbytes, s);
}

/* Point-to-point (pp.h): device buffers (the GPU pipeline's stream and its gradient, wte's
 * gradient) enqueued on comm->cuda_stream without a wait, as the reductions are; host buffers
 * (a checkpoint's stages gathered, pp_gather_array) through device buffers of their own, waited
 * for. */
static void nccl_sendrecv(struct comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf,
	size_t rbytes, int src)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	void *ds = NULL, *dr = NULL;
	if (dest < 0 && src < 0)
		return;
	if ((dest >= 0 && is_device(sbuf)) || (src >= 0 && is_device(rbuf))) {
		p2p(c, sbuf, sbytes, dest, rbuf, rbytes, src, s);
		return;
	}
	if (dest >= 0) {
		cuda_call(cudaMalloc(&ds, sbytes ? sbytes : 1), "cudaMalloc");
		cuda_call(cudaMemcpyAsync(ds, sbuf, sbytes, cudaMemcpyHostToDevice, s),
			"cudaMemcpyAsync");
	}
	if (src >= 0)
		cuda_call(cudaMalloc(&dr, rbytes ? rbytes : 1), "cudaMalloc");
	p2p(c, ds, sbytes, dest, dr, rbytes, src, s);
	if (src >= 0)
		cuda_call(cudaMemcpyAsync(rbuf, dr, rbytes, cudaMemcpyDeviceToHost, s),
			"cudaMemcpyAsync");
	wait_stream(s);
	cudaFree(ds);
	cudaFree(dr);
}

static void nccl_barrier(struct comm *c)
{
	float one = 1.0f;
	nccl_allreduce_sum(c, &one, 1);
}

/* Polls a non-blocking setup of sub (ncclCommSplit's), and its parent's state, to ncclSuccess
 * within the deadline: r, or ncclInProgress when the deadline passed. */
static ncclResult_t settle_setup(ncclComm_t parent, ncclComm_t sub, ncclResult_t r, double t0)
{
	while (r == ncclInProgress && now_s() - t0 <= nc.timeout_s) {
		sched_yield();
		r = comm_state(sub ? sub : parent);
	}
	while (r == ncclSuccess && (r = comm_state(parent)) == ncclInProgress &&
		now_s() - t0 <= nc.timeout_s)
		sched_yield();
	return r;
}

/* The grid's groups: ncclCommSplit of c, non-blocking like the world's communicator, set up
 * within the same deadline; its collectives are watched as the world's are (comms_error,
 * end_rank). Every rank of c calls it, in the same order (grid_init). */
static int nccl_split(struct comm *c, int color, int key, struct comm *out, char *err,
	size_t errlen)
{
	/* static: a non-blocking setup goes on after the call returns */
	static ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
	ncclComm_t sub = NULL;
	int rank = 0, count = 0;
	double t0 = now_s();

	if (nc.nr_subs == NR_SUBS) {
		snprintf(err, errlen, "rank %d: more than %d NCCL sub-communicators", nc.rank,
			NR_SUBS);
		return -ENOSPC;
	}
	config.blocking = 0;
	ncclResult_t r = ncclCommSplit(ncomm(c), color, key, &sub, &config);
	r = settle_setup(ncomm(c), sub, r, t0);
	if (r == ncclSuccess && (ncclCommUserRank(sub, &rank) != ncclSuccess ||
					ncclCommCount(sub, &count) != ncclSuccess))
		r = ncclInternalError;
	if (r != ncclSuccess) {
		if (r == ncclInProgress)
			snprintf(err, errlen,
				"rank %d: the group of color %d not set up after %.1f s "
				"(--comm-timeout %.0f)",
				nc.rank, color, now_s() - t0, nc.timeout_s);
		else
			snprintf(err, errlen, "rank %d: ncclCommSplit: %s", nc.rank,
				ncclGetErrorString(r));
		if (sub)
			ncclCommAbort(sub);
		return r == ncclInProgress ? -ETIMEDOUT : -EIO;
	}
	nc.subs[nc.nr_subs++] = sub;
	*out = (struct comm){ .ops = c->ops,
		.rank = rank,
		.world_size = count,
		.cuda_stream = c->cuda_stream,
		.launch = c->launch,
		.group = sub,
		.share_id = c->share_id };
	return 0;
}

/* A group's communicator (c->group) finalized within the deadline, else aborted, and no
 * longer watched. */
static void sub_done(struct comm *c)
{
	ncclComm_t sub = (ncclComm_t)c->group;
	double t0 = now_s();
	ncclResult_t r = ncclCommFinalize(sub);
	while (r == ncclInProgress && now_s() - t0 <= nc.timeout_s) {
		sched_yield();
		r = comm_state(sub);
	}
	if (r == ncclSuccess) {
		ncclCommDestroy(sub);
	} else {
		fprintf(stderr,
			"ferry train: nccl: rank %d: finalize of a group: %s after %.1f s; aborted\n",
			nc.rank, r == ncclInProgress ? "not done" : ncclGetErrorString(r),
			now_s() - t0);
		ncclCommAbort(sub);
	}
	for (int i = 0; i < nc.nr_subs; i++)
		if (nc.subs[i] == sub) {
			nc.subs[i] = nc.subs[--nc.nr_subs];
			break;
		}
	c->group = NULL;
}

/* A bucket (device memory): once the work queued on the compute stream so far is done (the
 * trainer calls this right after the kernels that finish the bucket's gradients), summed on
 * the side stream in fp32 while backward goes on. */
static void nccl_start_allreduce_sum(struct comm *c, float *buf, size_t n)
{
	cuda_call(cudaEventRecord(nc.ready, (cudaStream_t)c->cuda_stream), "cudaEventRecord");
	cuda_call(cudaStreamWaitEvent(nc.side, nc.ready, 0), "cudaStreamWaitEvent");
	enqueued(ncomm(c), ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, ncomm(c), nc.side),
		"bucket all-reduce", n, nc.side);
	if (!nc.side_busy)
		nc.side_since = now_s();
	nc.side_busy = true;
}

/* NCCL moves its collectives by itself: this only looks for an error the communicator met. */
static bool nccl_progress(struct comm *c)
{
	ncclResult_t st = comms_error();
	(void)c;
	if (st != ncclSuccess) {
		char line[160];
		describe_pending(line, sizeof(line));
		give_up(line, now_s() - nc.side_since, st);
	}
	return cudaStreamQuery(nc.side) == cudaSuccess;
}

/* The compute stream waits for the buckets on the device; the host waits in sync. */
static void nccl_wait_all(struct comm *c)
{
	if (!nc.side_busy)
		return;
	cuda_call(cudaEventRecord(nc.side_done, nc.side), "cudaEventRecord");
	cuda_call(cudaStreamWaitEvent((cudaStream_t)c->cuda_stream, nc.side_done, 0),
		"cudaStreamWaitEvent");
	nc.side_busy = false;
}

static void nccl_sync(struct comm *c)
{
	wait_stream((cudaStream_t)c->cuda_stream);
	wait_stream(nc.side);
}

static void nccl_done(struct comm *c)
{
	double t0 = now_s();
	ncclResult_t r, q;
	if (c->group) {
		sub_done(c);
		return;
	}
	/* groups their owner left behind (grid_done frees them first) */
	for (int i = 0; i < nc.nr_subs; i++)
		ncclCommAbort(nc.subs[i]);
	nc.nr_subs = 0;
	if (nc.comm) {
		/* every collective flushed, then the state polled to ncclSuccess within the
		 * deadline. The run's work is done by now (its last checkpoint behind a barrier):
		 * a peer gone at this point costs a line, not the exit status. */
		r = ncclCommFinalize(nc.comm);
		while (r == ncclInProgress && now_s() - t0 <= nc.timeout_s) {
			sched_yield();
			if ((q = ncclCommGetAsyncError(nc.comm, &r)) != ncclSuccess)
				r = q;
		}
		if (r == ncclSuccess) {
			ncclCommDestroy(nc.comm);
		} else {
			fprintf(stderr,
				"ferry train: nccl: rank %d: finalize: %s after %.1f s; "
				"the communicator aborted\n",
				nc.rank, r == ncclInProgress ? "not done" : ncclGetErrorString(r),
				now_s() - t0);
			ncclCommAbort(nc.comm);
		}
	}
	nc.comm = NULL;
	cudaFree(nc.bounce);
	nc.bounce = NULL;
	nc.bounce_n = 0;
	for (int i = 0; i < NR_OPS; i++)
		if (nc.ops[i].done)
			cudaEventDestroy(nc.ops[i].done);
	if (nc.ready)
		cudaEventDestroy(nc.ready);
	if (nc.side_done)
		cudaEventDestroy(nc.side_done);
	if (nc.side)
		cudaStreamDestroy(nc.side);
	memset(&nc.ops, 0, sizeof(nc.ops));
	nc.ready = nc.side_done = NULL;
	nc.side = NULL;
	nc.nr_ops = 0;
}

static void nccl_abort_all(struct comm *c, int status)
{
	/* the others see their collective fail, or wait out their deadline, and exit through
	 * the watchdog */
	(void)c;
	end_rank(status);
}

const struct comm_ops comm_nccl_ops = {
	.name = "nccl",
	.init = nccl_init,
	.allreduce_sum = nccl_allreduce_sum,
	.barrier = nccl_barrier,
	.allreduce_max_u64 = nccl_allreduce_max_u64,
	.reduce_scatter_sum = nccl_reduce_scatter_sum,
	.allgather = nccl_allgather,
	.start_allreduce_sum = nccl_start_allreduce_sum,
	.progress = nccl_progress,
	.wait_all = nccl_wait_all,
	.sync = nccl_sync,
	.split = nccl_split,
	.allreduce_sum_bf16 = nccl_allreduce_sum_bf16,
	.done = nccl_done,
	.abort_all = nccl_abort_all,
	.sendrecv = nccl_sendrecv,
};
