"""Tests of optimization.create_optimizer against NumPy references written here.

Each test builds its own small graph and runs it in a tf.compat.v1 Session.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_mixed_precision_rewrite

from distributed import SingleProcess
from optimization import create_optimizer

tf1 = tf.compat.v1

WD, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-6


# ---------------------------------------------------------------- NumPy references

def np_learning_rate(step, init_lr, total, warmup, end_lr, power, rescale):
    """Linear warm-up from 0; then polynomial decay on the global step, its start scaled (when
    `rescale`) so that it equals init_lr at the end of warm-up."""
    if step < warmup:
        return init_lr * step / warmup
    start = init_lr
    if rescale and warmup < total:
        start = end_lr + (init_lr - end_lr) / (1 - warmup / total) ** power
    return (start - end_lr) * (1 - min(step, total) / total) ** power + end_lr


def excluded(name):
    """Google's exclusions from weight decay (and here from LAMB's trust ratio)."""
    return any(p in name for p in ("LayerNorm", "layer_norm", "bias"))


def np_adam(name, w, g, m, v, lr, wd):
    """google-research/bert AdamWeightDecayOptimizer: no bias correction, decoupled decay."""
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    update = m / (np.sqrt(v) + EPS)
    if not excluded(name):
        update = update + wd * w
    return w - lr * update, m, v


def np_lamb(name, w, g, m, v, lr, wd, t):
    """LAMB with bias correction at update number t; trust ratio except for excluded names."""
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    update = (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS)
    if not excluded(name):
        update = update + wd * w
        w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
        update = update * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
    return w - lr * update, m, v


# ---------------------------------------------------------------- helpers

def make_vars(values):
    """float32 variables named and initialised from {name: array}."""
    return {name: tf1.get_variable(name, initializer=tf.constant(value, tf.float32))
            for name, value in values.items()}


def session():
    """A single-threaded session with the variables initialised."""
    sess = tf1.Session(config=tf1.ConfigProto(intra_op_parallelism_threads=1,
                                              inter_op_parallelism_threads=1))
    sess.run(tf1.global_variables_initializer())
    return sess


def var_by_name(name):
    """The global variable called `name`, e.g. an optimizer slot."""
    return next(v for v in tf1.global_variables() if v.op.name == name)


def linear_loss(variables):
    """loss = sum_k <c_k, w_k> with a placeholder c_k per variable: the gradient is c."""
    feeds = {n: tf1.placeholder(tf.float32, v.shape) for n, v in variables.items()}
    loss = tf.add_n([tf.reduce_sum(feeds[n] * v) for n, v in variables.items()])
    return loss, feeds


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("optimizer_type,wd", [("adam", WD), ("lamb", WD), ("lamb", 0.0)])
def test_one_step_matches_numpy(optimizer_type, wd):
    """One update from random weights, moments and step equals the NumPy reference, for decayed
    and excluded variables, a zero weight (||w|| = 0) and a zero update (||u|| = 0 when wd = 0)."""
    rng = np.random.default_rng(0)
    shapes = {"layer/dense/kernel": (4, 3), "layer/dense/bias": (3,),
              "layer/LayerNorm/gamma": (3,), "zero/kernel": (2, 2), "still/kernel": (2,)}
    w0 = {n: rng.normal(size=s) for n, s in shapes.items()}
    w0["zero/kernel"][:] = 0.0
    m0 = {n: 0.1 * rng.normal(size=s) for n, s in shapes.items()}
    v0 = {n: 0.01 * rng.random(size=s) for n, s in shapes.items()}
    g = {n: rng.normal(size=s) for n, s in shapes.items()}
    m0["still/kernel"][:] = 0.0
    g["still/kernel"][:] = 0.0
    step, init_lr, total, warmup = 7, 1e-2, 20, 5
    with tf.Graph().as_default():
        variables = make_vars(w0)
        loss, feeds = linear_loss(variables)
        ops = create_optimizer(loss, init_lr, total, warmup, optimizer_type=optimizer_type,
                               weight_decay_rate=wd, clip_norm=None)
        with session() as sess:
            for n in shapes:
                var_by_name(n + "/adam_m").load(m0[n], sess)
                var_by_name(n + "/adam_v").load(v0[n], sess)
            ops.global_step.load(step, sess)
            sess.run(ops.train_op, {feeds[n]: g[n] for n in shapes})
            fetch = {n: [variables[n], var_by_name(n + "/adam_m"), var_by_name(n + "/adam_v")]
                     for n in shapes}
            got = sess.run(fetch)
            assert sess.run(ops.global_step) == step + 1
    power, rescale = (1.0, True) if optimizer_type == "adam" else (0.5, False)
    lr = np_learning_rate(step, init_lr, total, warmup, 0.0, power, rescale)
    for n in shapes:
        if optimizer_type == "adam":
            want = np_adam(n, w0[n], g[n], m0[n], v0[n], lr, wd)
        else:
            want = np_lamb(n, w0[n], g[n], m0[n], v0[n], lr, wd, t=step + 1)
        for got_x, want_x in zip(got[n], want, strict=True):
            np.testing.assert_allclose(got_x, want_x, rtol=1e-6, atol=1e-12, err_msg=n)


LR_CASES = [
    # optimizer, kwargs, expected (power, rescale, end_lr)
    ("adam", {}, (1.0, True, 0.0)),  # NVIDIA Adam: continuous at the end of warm-up
    ("lamb", {}, (0.5, False, 0.0)),  # NVIDIA LAMB: sqrt decay on the global step
    ("adam", {"rescale_decay": False}, (1.0, False, 0.0)),  # google-research/bert
    ("adam", {"poly_power": 2.0, "end_lr": 1e-5}, (2.0, True, 1e-5)),
]


@pytest.mark.parametrize("optimizer_type,kwargs,expected", LR_CASES)
def test_learning_rate_schedule(optimizer_type, kwargs, expected):
    """The lr tensor at step 0, mid warm-up, end of warm-up, mid decay, the last update and
    past the end equals the reference schedule."""
    power, rescale, end_lr = expected
    init_lr, total, warmup = 1e-3, 1000, 100
    steps = [0, 50, 100, 550, 999, 1000, 1200]
    with tf.Graph().as_default():
        w = tf1.get_variable("w", initializer=1.0)
        ops = create_optimizer(w * w, init_lr, total, warmup, optimizer_type=optimizer_type,
                               **kwargs)
        with session() as sess:
            got = []
            for s in steps:
                ops.global_step.load(s, sess)
                got.append(sess.run(ops.learning_rate))
    want = [np_learning_rate(s, init_lr, total, warmup, end_lr, power, rescale) for s in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    assert got[0] == 0.0 and got[1] == pytest.approx(init_lr / 2)
    if rescale:
        assert got[2] == pytest.approx(init_lr)


def test_learning_rate_when_warmup_exceeds_training():
    """With more warm-up than training steps the rate only warms up."""
    with tf.Graph().as_default():
        w = tf1.get_variable("w", initializer=1.0)
        ops = create_optimizer(w * w, 1e-3, 10, 100)
        with session() as sess:
            ops.global_step.load(9, sess)
            assert sess.run(ops.learning_rate) == pytest.approx(9e-5, rel=1e-6)


def train_dense(optimizer_type, batches, n, **kwargs):
    """Train a dense layer with squared loss on the (x, y) batches, one run per batch with n
    accumulation steps; return the weights and the global step after every run."""
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [None, 4])
        y = tf1.placeholder(tf.float32, [None, 3])
        variables = make_vars({"dense/kernel": rng.normal(size=(4, 3)),
                               "dense/bias": rng.normal(size=3)})
        pred = tf.matmul(x, variables["dense/kernel"]) + variables["dense/bias"]
        loss = tf.reduce_mean(tf.square(pred - y))
        ops = create_optimizer(loss, 1e-2, 100, 0, optimizer_type=optimizer_type,
                               num_accumulation_steps=n, clip_norm=None, **kwargs)
        with session() as sess:
            steps = []
            for bx, by in batches:
                sess.run(ops.train_op, {x: bx, y: by})
                steps.append(sess.run(ops.global_step))
            return sess.run(variables), steps


@pytest.mark.parametrize("optimizer_type", ["adam", "lamb"])
def test_accumulation_equals_large_batch(optimizer_type):
    """Two updates of N=4 accumulated micro-batches of size 2 give the weights of two updates on
    batches of 8, and global_step counts updates, not micro-batches."""
    rng = np.random.default_rng(2)
    n, b = 4, 2
    big = [(rng.normal(size=(n * b, 4)), rng.normal(size=(n * b, 3))) for _ in range(2)]
    micro = [(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b]) for x, y in big for i in range(n)]
    want, _ = train_dense(optimizer_type, big, 1)
    got, steps = train_dense(optimizer_type, micro, n)
    assert steps == [0, 0, 0, 1, 1, 1, 1, 2]
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


class CountingProcess(SingleProcess):
    """A one-rank handle that counts, in a graph variable, how many tensors it allreduced."""

    def __init__(self):
        self.count = tf1.get_variable("allreduce_count", shape=[], dtype=tf.int64,
                                      initializer=tf1.zeros_initializer(), trainable=False)

    def allreduce(self, tensor, name=None):
        with tf.control_dependencies([self.count.assign_add(1)]):
            return tf.identity(tensor)


@pytest.mark.parametrize("post,want_count", [(True, 2), (False, 4 * 2)])
def test_allreduce_post_accumulation_reduces_once_per_update(post, want_count):
    """Over one update of 4 micro-batches, the 2 gradients are allreduced once with
    allreduce_post_accumulation and 4 times without it; both give the same weights."""
    rng = np.random.default_rng(3)
    data = [(rng.normal(size=(2, 4)), rng.normal(size=(2, 3))) for _ in range(4)]
    results = []
    for distributed in (None, "counting"):
        with tf.Graph().as_default():
            x = tf1.placeholder(tf.float32, [None, 4])
            y = tf1.placeholder(tf.float32, [None, 3])
            variables = make_vars({"dense/kernel": np.ones((4, 3)), "dense/bias": np.zeros(3)})
            pred = tf.matmul(x, variables["dense/kernel"]) + variables["dense/bias"]
            loss = tf.reduce_mean(tf.square(pred - y))
            handle = CountingProcess() if distributed else None
            ops = create_optimizer(loss, 1e-2, 100, 0, num_accumulation_steps=4,
                                   allreduce_post_accumulation=post, distributed=handle)
            with session() as sess:
                for bx, by in data:
                    sess.run(ops.train_op, {x: bx, y: by})
                results.append(sess.run(variables))
                if handle:
                    assert sess.run(handle.count) == want_count
    for name in results[0]:
        np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-6)


def first_moment_after_one_update(micro_batch_grads, **kwargs):
    """adam_m of two variables after one Adam update fed the given per-micro-batch gradients:
    it equals (1 - beta_1) times the gradient the optimizer applied."""
    with tf.Graph().as_default():
        variables = make_vars({"a/kernel": np.ones(2), "b/kernel": np.ones(1)})
        loss, feeds = linear_loss(variables)
        ops = create_optimizer(loss, 1e-2, 100, 0, num_accumulation_steps=len(micro_batch_grads),
                               **kwargs)
        with session() as sess:
            for g in micro_batch_grads:
                sess.run(ops.train_op, {feeds["a/kernel"]: g[:2], feeds["b/kernel"]: g[2:]})
            m = sess.run([var_by_name("a/kernel/adam_m"), var_by_name("b/kernel/adam_m")])
    return np.concatenate(m) / (1 - B1)


def test_clipping_scales_to_global_norm():
    """Gradients of global norm 13 (over two variables) are scaled by 1/13 to norm 1; norm 1.3
    with clip_norm 2 and norm 0.13 pass unchanged; clip_norm=None never clips."""
    g = np.array([3.0, 4.0, 12.0])
    np.testing.assert_allclose(first_moment_after_one_update([g]), g / 13, rtol=1e-6)
    np.testing.assert_allclose(first_moment_after_one_update([g / 10], clip_norm=2.0), g / 10,
                               rtol=1e-6)
    np.testing.assert_allclose(first_moment_after_one_update([g / 100]), g / 100, rtol=1e-6)
    np.testing.assert_allclose(first_moment_after_one_update([g], clip_norm=None), g, rtol=1e-6)


def test_clipping_is_per_micro_batch_before_accumulation():
    """With 2 micro-batches each one's gradient of loss/2 is clipped on its own, then summed:
    [3,4,12]/2 (norm 6.5) becomes [3,4,12]/13, [0.03,0.04,0.12]/2 passes, whatever the
    allreduce placement."""
    g1, g2 = np.array([3.0, 4.0, 12.0]), np.array([0.03, 0.04, 0.12])
    want = g1 / 13 + g2 / 2
    for post in (False, True):
        got = first_moment_after_one_update([g1, g2], allreduce_post_accumulation=post)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def amp_kernel_optimizer(num_warmup_steps, **optimizer_args):
    """A loss linear in one kernel of three ones, trained with amp: the kernel, the feed of its
    gradient, the optimizer ops and the kernel's first moment."""
    variables = make_vars({"w/kernel": np.ones(3)})
    loss, feeds = linear_loss(variables)
    ops = create_optimizer(loss, 1e-2, 100, num_warmup_steps, amp=True, **optimizer_args)
    return variables["w/kernel"], feeds["w/kernel"], ops, var_by_name("w/kernel/adam_m")


def test_loss_scaling_skips_non_finite_and_adapts_scale():
    """Under amp: the scale starts at 2**32; an inf gradient leaves weights, moments, global
    step and lr unchanged, counts a skipped step and halves the scale; a finite update's moment
    is the unscaled gradient; growth_interval finite updates in a row double the scale."""
    with tf.Graph().as_default():
        kernel, c, ops, m = amp_kernel_optimizer(10, loss_scale_growth_interval=3)
        state = [kernel, m, ops.global_step, ops.learning_rate]
        with session() as sess:
            assert sess.run(ops.loss_scale) == 2.0**32

            g = np.array([0.1, -0.2, 0.3])
            sess.run(ops.train_op, {c: g})
            np.testing.assert_allclose(sess.run(m), (1 - B1) * g, rtol=1e-6)
            before = sess.run(state)
            sess.run(ops.train_op, {c: [np.inf, 0.0, 0.0]})
            after = sess.run(state)
            for x, y in zip(before, after, strict=True):
                np.testing.assert_array_equal(x, y)
            assert sess.run(ops.skipped_steps) == 1
            assert sess.run(ops.loss_scale) == 2.0**31

            scales = []
            for _ in range(3):
                sess.run(ops.train_op, {c: g})
                scales.append(sess.run(ops.loss_scale))
            assert scales == [2.0**31, 2.0**31, 2.0**32]
            assert sess.run(ops.global_step) == 4


@pytest.mark.parametrize("clip_norm", [1.0, None])
def test_non_finite_gradients_skip_the_update_without_amp(clip_norm):
    """Property: without amp, a NaN or an Inf gradient leaves weights, moments and global step
    as they are and counts a skipped step, with and without clipping; with clipping, finite
    gradients whose global norm overflows float32 are skipped too (tf.clip_by_global_norm turns
    them into NaN), without clipping they are applied."""
    with tf.Graph().as_default():
        variables = make_vars({"w/kernel": np.ones(3)})
        loss, feeds = linear_loss(variables)
        ops = create_optimizer(loss, 1e-2, 100, 0, clip_norm=clip_norm)
        kernel, c = variables["w/kernel"], feeds["w/kernel"]
        state = [kernel, var_by_name("w/kernel/adam_m"), var_by_name("w/kernel/adam_v"),
                 ops.global_step]
        with session() as sess:
            sess.run(ops.train_op, {c: [0.1, -0.2, 0.3]})
            skipped = 0
            for g in ([np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [3e38, 3e38, 0.0]):
                before = sess.run(state)
                sess.run(ops.train_op, {c: g})
                after = sess.run(state)
                applied = clip_norm is None and np.isfinite(g).all()
                skipped += not applied
                assert sess.run(ops.skipped_steps) == skipped
                assert after[-1] == before[-1] + applied
                if not applied:
                    for x, y in zip(before, after, strict=True):
                        np.testing.assert_array_equal(x, y)


def test_loss_scaling_with_accumulation_skips_whole_update():
    """A NaN in one of 2 micro-batches skips that update; the next update, from clean
    accumulators, applies exactly the finite gradients."""
    with tf.Graph().as_default():
        kernel, c, ops, m = amp_kernel_optimizer(0, num_accumulation_steps=2)
        with session() as sess:
            g1, g2 = np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.0, -0.1])
            for feed in ([np.nan, 0.0, 0.0], g2):
                sess.run(ops.train_op, {c: feed})
            assert sess.run([ops.global_step, ops.skipped_steps, ops.loss_scale]) == [0, 1, 2.0**31]
            np.testing.assert_array_equal(sess.run(kernel), np.ones(3))
            for feed in (g1, g2):
                sess.run(ops.train_op, {c: feed})
            assert sess.run(ops.global_step) == 1
            np.testing.assert_allclose(sess.run(m), (1 - B1) * (g1 + g2) / 2, rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"optimizer_type": "sgd"}, "optimizer_type must be one of"),
    ({"num_accumulation_steps": 0}, "num_accumulation_steps must be an integer >= 1"),
    ({"num_train_steps": 0}, "num_train_steps must be >= 1"),
    ({"clip_norm": 0.0}, "clip_norm must be > 0 or None"),
])
def test_bad_arguments_raise(kwargs, message):
    """Out-of-range arguments raise ValueError naming the argument."""
    args = {"init_lr": 1e-3, "num_train_steps": 10, "num_warmup_steps": 1, **kwargs}
    with tf.Graph().as_default():
        w = tf1.get_variable("w", initializer=1.0)
        with pytest.raises(ValueError, match=message):
            create_optimizer(w * w, **args)


def test_adamw_matches_torch_adamw_step_for_step():
    """optimizer_type="adamw" gives PyTorch's AdamW (bias-corrected moments, decoupled weight
    decay, none on LayerNorm/bias) over 5 updates at a constant rate, to float32 round-off."""
    import torch

    rng = np.random.default_rng(3)
    shapes = {"layer/dense/kernel": (4, 3), "layer/dense/bias": (3,),
              "layer/LayerNorm/gamma": (3,)}
    w0 = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    grads = [{n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
             for _ in range(5)]
    lr = 1e-2
    params = {n: torch.nn.Parameter(torch.tensor(w)) for n, w in w0.items()}
    optimizer = torch.optim.AdamW(
        [{"params": [params["layer/dense/kernel"]], "weight_decay": WD},
         {"params": [params["layer/dense/bias"], params["layer/LayerNorm/gamma"]],
          "weight_decay": 0.0}], lr=lr, betas=(B1, B2), eps=EPS)
    for g in grads:
        for n, p in params.items():
            p.grad = torch.tensor(g[n])
        optimizer.step()
    with tf.Graph().as_default():
        variables = make_vars(w0)
        loss, feeds = linear_loss(variables)
        # warm-up 0 and a horizon of 1e9 updates: the rate is lr to 1e-8 relative
        ops = create_optimizer(loss, lr, 10**9, 0, optimizer_type="adamw", rescale_decay=False,
                               clip_norm=None)
        with session() as sess:
            for g in grads:
                sess.run(ops.train_op, {feeds[n]: g[n] for n in shapes})
            got = sess.run(variables)
    for n, p in params.items():
        np.testing.assert_allclose(got[n], p.detach().numpy(), rtol=2e-5, atol=1e-6,
                                   err_msg=n)


def allocator_bytes_in_use(sess):
    """Bytes the session's CPU allocator holds, read from the trace of a tiny probe run."""
    metadata = tf1.RunMetadata()
    sess.run("memory_probe:0", {"memory_probe_input:0": np.ones(1 << 16, np.float32)},
             options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
             run_metadata=metadata)
    return max(memory.allocator_bytes_in_use for device in metadata.step_stats.dev_stats
               for node in device.node_stats for memory in node.memory)


@pytest.mark.parametrize("optimizer_type,n", [("adam", 1), ("lamb", 1), ("adam", 2)])
def test_zero_initialised_state_is_not_held_twice_after_updates(optimizer_type, n):
    """The moments (and accumulators) start at zero without the session keeping their initial
    buffers: after updates the allocator holds about what it held after initialisation, not a
    second copy of each 64 MiB moment (a tf.zeros_initializer Const's buffer, which the session
    keeps with the initializer, once the variable is first updated)."""
    size = 64 * 2**20
    with tf.Graph().as_default():
        weight = tf1.get_variable("w", shape=[size // 4],
                                  initializer=tf1.random_normal_initializer())
        ops = create_optimizer(tf.reduce_sum(tf.square(weight)), 1e-3, 100, 0,
                               optimizer_type=optimizer_type, num_accumulation_steps=n)
        probe_input = tf1.placeholder(tf.float32, [None], name="memory_probe_input")
        tf.multiply(probe_input, 2.0, name="memory_probe")
        with session() as sess:
            initialised = allocator_bytes_in_use(sess)
            for _ in range(2 * n):
                sess.run(ops.train_op)
            assert sess.run(ops.global_step) == 2
            assert allocator_bytes_in_use(sess) - initialised < size // 2


def test_bf16_gradients_are_cast_to_float32_once():
    """Under oneDNN's bfloat16 rewrite the products' gradients are bf16; each is cast to
    float32 once, before the global norm, and the update's tf.cond reads that cast: no cast of
    a gradient runs after the cond's Switch (which would be a second one per gradient)."""
    import distributed
    import session_setup

    with tf.Graph().as_default():
        x = tf.constant(np.random.default_rng(0).normal(size=[8, 16]), tf.float32)
        kernels = [tf1.get_variable(f"kernel_{i}", [16, 16]) for i in range(3)]
        for kernel in kernels:
            x = tf.matmul(x, kernel)
        ops = create_optimizer(tf.reduce_sum(x * x), 1e-3, 100, 0)
        config = session_setup.session_config(distributed.SingleProcess(), 1, 1, amp=True,
                                              amp_dtype="bfloat16")
        require_mixed_precision_rewrite(config)
        with tf1.Session(config=config) as sess:
            sess.run(tf1.global_variables_initializer())
            metadata = tf1.RunMetadata()
            sess.run(ops.train_op, options=tf1.RunOptions(output_partition_graphs=True),
                     run_metadata=metadata)
    nodes = {node.name: node for graph in metadata.partition_graphs for node in graph.node}
    casts = [node for node in nodes.values() if node.op == "Cast"
             and node.attr["DstT"].type == tf.float32.as_datatype_enum]
    sources = [nodes[cast.input[0].split(":")[0]] for cast in casts]
    assert any(source.name.startswith("gradients/") for source in sources)  # the rewrite ran
    assert [source.name for source in sources if source.op == "Switch"] == []
