"""The training op of BERT pre-training: Adam or LAMB, learning-rate schedule, gradient
accumulation, clipping and dynamic loss scaling, as google-research/bert and NVIDIA's TF BERT
(DeepLearningExamples) run them.

One `session.run(train_op)` consumes one micro-batch. With `num_accumulation_steps` N > 1 the
gradients of N runs are summed in fp32 variables (`<var>/accum`, NVIDIA's names) and every N-th
run applies them, so `global_step` counts updates, not micro-batches; `local_step` counts the
micro-batches of the update in progress. All state is in variables, so a checkpoint taken between
micro-batches resumes exactly.

Order of operations in each run (NVIDIA's):
  1. gradients of `loss / N`, times the loss scale with `amp`; sparse gradients made dense;
  2. allreduce of every gradient, unless `allreduce_post_accumulation` (and N > 1);
  3. unscale; clip to global norm `clip_norm` (the norm of this micro-batch's gradients over all
     variables, so each micro-batch is clipped on its own before accumulation and, with
     `allreduce_post_accumulation`, before the allreduce);
  4. accumulate (N > 1); on update runs: allreduce of the sums (`allreduce_post_accumulation`),
     then skip the update if any gradient is non-finite (in every precision: a NaN or Inf never
     reaches the weights; `skipped_steps` counts the skips and the runner decides when to stop);
     apply; global_step += 1.
Both allreduces see loss-scaled values (NVIDIA reduces the summed gradients unscaled), so that an
fp16-compressed allreduce neither flushes small gradients to zero nor hides an overflow: the
finiteness test runs on the reduced gradients, so every rank skips the same updates.
The unscaling and clipping factor multiplies the gradients inside the update, and every
variable's update (moments, weight decay, step) runs as one XLA computation: one fused pass over
gradient, weights and moments instead of a dozen TF kernels each passing over the whole tensor.

Constants and their sources:
  weight decay 0.01, beta_1 0.9, beta_2 0.999, epsilon 1e-6, decay exclusions LayerNorm /
  layer_norm / bias: google-research/bert `create_optimizer`, kept by NVIDIA for Adam and LAMB.
  Clip norm 1.0: google-research/bert and NVIDIA ("this is how the model was pre-trained").
  Polynomial power 1.0 (Adam) and 0.5 (LAMB), end lr 0: NVIDIA `create_optimizer`.
  Loss scale 2**32 initial, x2 after 1000 consecutive finite updates, /2 (never below 1) on every
  non-finite update: NVIDIA's `DynamicLossScale(initial_loss_scale=2**32, increment_period=1000,
  multiplier=2.0)`; the halving is TF's DynamicLossScale rule for that multiplier.
"""

import math
import re
from typing import NamedTuple

import tensorflow as tf

from distributed import SingleProcess

tf1 = tf.compat.v1

OPTIMIZER_TYPES = ("adam", "adamw", "lamb")

# Variables whose name contains one of these patterns (re.search) get no weight decay and, with
# LAMB, no trust ratio (ratio 1). The list is google-research/bert's and NVIDIA's.
EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")

# Dynamic loss scaling: the scale is multiplied by this after `loss_scale_growth_interval`
# consecutive finite updates and divided by it after every non-finite one.
LOSS_SCALE_MULTIPLIER = 2.0


class OptimizerOps(NamedTuple):
    """What `create_optimizer` builds."""

    train_op: tf.Operation  # run once per micro-batch
    learning_rate: tf.Tensor  # float32 scalar: the rate of the next update, for logging
    global_step: tf.Variable  # int64: counts applied updates
    loss_scale: tf.Variable | None  # float32 dynamic loss scale; None without amp
    skipped_steps: tf.Variable  # int64: updates skipped for non-finite gradients


# Google's constants (module docstring), the defaults of create_optimizer.
WEIGHT_DECAY_RATE, BETA_1, BETA_2, EPSILON = 0.01, 0.9, 0.999, 1e-6


def create_optimizer(
    loss,
    init_lr,
    num_train_steps,
    num_warmup_steps,
    optimizer_type="adam",
    weight_decay_rate=WEIGHT_DECAY_RATE,
    beta_1=BETA_1,
    beta_2=BETA_2,
    epsilon=EPSILON,
    poly_power=None,
    end_lr=0.0,
    rescale_decay=None,
    num_accumulation_steps=1,
    allreduce_post_accumulation=False,
    clip_norm=1.0,
    amp=False,
    init_loss_scale=2.0**32,
    loss_scale_growth_interval=1000,
    distributed=None,
):
    """Build the op that trains all trainable variables on `loss`, one micro-batch per run.

    Call it in the top-level variable scope: the optimizer's variables are named after the model's
    (`<var>/adam_m`, `<var>/adam_v`, `<var>/accum`) so that google-research/bert and NVIDIA
    checkpoints resume. LAMB keeps its moments in `adam_m`/`adam_v` too, as NVIDIA's LAMB does.

    Args:
      loss: float32 scalar, the mean loss of one micro-batch.
      init_lr: peak learning rate, reached at the end of warm-up. Under Horovod NVIDIA passes the
        per-GPU rate times the number of ranks; that scaling is the caller's.
      num_train_steps: number of updates at which the rate reaches `end_lr`.
      num_warmup_steps: updates of linear warm-up, `init_lr * global_step / num_warmup_steps`
        (0 at step 0). May exceed `num_train_steps`: the run then only warms up.
      optimizer_type: "adam" (google-research/bert's AdamWeightDecayOptimizer: decoupled weight
        decay, no bias correction), "adamw" (the same with bias-corrected moments: PyTorch's and
        Hugging Face's AdamW, step for step) or "lamb" (You et al. 2019: bias-corrected moments,
        decoupled weight decay, layer-wise trust ratio). Without bias correction the first
        updates are larger, by (1 - beta_1^t) / sqrt(1 - beta_2^t): 3.2x at t = 1, 6.5x at 10,
        2x still at 270; fine over a pre-training run, a much higher effective rate over a
        short fine-tuning.
      weight_decay_rate, beta_1, beta_2, epsilon: optimizer constants.
      poly_power: power of the polynomial decay; None means NVIDIA's 1.0 for Adam, 0.5 for LAMB.
      end_lr: learning rate at `num_train_steps` and after.
      rescale_decay: decay, as Google and NVIDIA do, is a function of global_step from 0, so it
        starts below `init_lr` at the end of warm-up. True scales it up to meet `init_lr` there
        (NVIDIA's Adam); False keeps it as is (google-research/bert, NVIDIA's LAMB). None means
        NVIDIA's choice: True for Adam, False for LAMB.
      num_accumulation_steps: micro-batches per update, N >= 1.
      allreduce_post_accumulation: with N > 1, allreduce the summed gradients once per update
        instead of every micro-batch's gradients.
      clip_norm: global norm each micro-batch's gradients are clipped to; None disables clipping.
      amp: dynamic loss scaling for mixed precision (the fp16 rewrite itself is enabled by the
        session config); the scale drops after every update with non-finite gradients. Such
        an update is skipped with or without `amp`: weights, moments, global_step and so the
        learning rate stay as they are, and `skipped_steps` grows by one.
      init_loss_scale: loss scale at the start (`amp` only).
      loss_scale_growth_interval: consecutive finite updates after which the scale doubles.
      distributed: the distributed handle (see distributed.py); None means a single process.

    Returns:
      OptimizerOps(train_op, learning_rate, global_step, loss_scale, skipped_steps).

    Raises:
      ValueError: for an argument out of range or an unusable graph.
    """
    _check_arguments(init_lr, num_train_steps, num_warmup_steps, optimizer_type, beta_1, beta_2,
                     epsilon, poly_power, end_lr, num_accumulation_steps, clip_norm,
                     init_loss_scale, loss_scale_growth_interval)
    if tf1.get_variable_scope().name:
        raise ValueError("create_optimizer must be called in the top-level variable scope, not in "
                         f"{tf1.get_variable_scope().name!r}: its variable names would not match "
                         "google-research/bert checkpoints.")
    is_lamb = optimizer_type == "lamb"
    if poly_power is None:
        poly_power = 0.5 if is_lamb else 1.0
    if rescale_decay is None:
        rescale_decay = not is_lamb
    distributed = distributed or SingleProcess()
    n = num_accumulation_steps
    post_accumulation = allreduce_post_accumulation and n > 1

    global_step = tf1.train.get_or_create_global_step()
    learning_rate = tf.identity(
        _learning_rate(global_step, init_lr, num_train_steps, num_warmup_steps, end_lr,
                       poly_power, rescale_decay),
        name="learning_rate")

    tvars = tf1.trainable_variables()
    not_fp32 = [v.op.name for v in tvars if v.dtype.base_dtype != tf.float32]
    if not_fp32:
        raise ValueError(f"trainable variables must be float32 (mixed precision keeps fp32 "
                         f"weights); these are not: {not_fp32}")

    loss_scale = good_steps = None
    skipped_steps = _counter("skipped_steps")
    if amp:
        loss_scale = tf1.get_variable("loss_scale", initializer=float(init_loss_scale),
                                      dtype=tf.float32, trainable=False)
        good_steps = _counter("loss_scale_good_steps")
    scaled_loss = loss if n == 1 else loss * (1.0 / n)
    if amp:
        scaled_loss = scaled_loss * loss_scale
    all_grads = tf.gradients(scaled_loss, tvars)
    grads_and_vars = [(g, v) for g, v in zip(all_grads, tvars, strict=True) if g is not None]
    if not grads_and_vars:
        raise ValueError("the loss depends on no trainable variable")
    grads = [tf.convert_to_tensor(g) for g, _ in grads_and_vars]
    tvars = [v for _, v in grads_and_vars]
    slots = [_slots(v) for v in tvars]

    if not post_accumulation:
        grads = distributed.allreduce_gradients(grads)
    grads = _float32_for_mixed_precision(grads)
    grad_scale, norm = _unscale_and_clip_factor(grads, loss_scale, clip_norm)

    def apply(final_grads, scale, finite):
        """Apply the update to `final_grads` times `scale` (None: 1), or skip it when `finite`
        is false; returns the op."""
        def variable_updates(scaled_grads):
            if is_lamb:
                return _lamb_updates(scaled_grads, tvars, slots, learning_rate, global_step,
                                     weight_decay_rate, beta_1, beta_2, epsilon)
            return _adam_updates(scaled_grads, tvars, slots, learning_rate, weight_decay_rate,
                                 beta_1, beta_2, epsilon,
                                 global_step if optimizer_type == "adamw" else None)

        def update():
            with tf.control_dependencies([_compiled(variable_updates, final_grads, scale)]):
                return tf.group(global_step.assign_add(1))

        applied = tf.cond(finite, update, lambda: tf.group(skipped_steps.assign_add(1)))
        if not amp:
            return applied
        with tf.control_dependencies([applied]):
            return _update_loss_scale(finite, loss_scale, good_steps, loss_scale_growth_interval)

    if n == 1:
        # With clipping the norm is non-finite exactly when the update must be skipped (a NaN or
        # Inf gradient, or a norm beyond float32 that clipping would turn into NaN gradients).
        finite = _all_finite(grads) if norm is None else tf.math.is_finite(norm)
        train_op = apply(grads, grad_scale, finite)
    else:
        # Each micro-batch is unscaled and clipped on its own; the sums are applied as they are.
        if grad_scale is not None:
            grads = [g * grad_scale for g in grads]
        train_op = _accumulate_and_apply(grads, tvars, n, apply, distributed, post_accumulation,
                                         loss_scale)
    return OptimizerOps(
        train_op=tf.group(train_op, name="train_op"),
        learning_rate=learning_rate,
        global_step=global_step,
        loss_scale=loss_scale,
        skipped_steps=skipped_steps,
    )


def _check_arguments(init_lr, num_train_steps, num_warmup_steps, optimizer_type, beta_1, beta_2,
                     epsilon, poly_power, end_lr, num_accumulation_steps, clip_norm,
                     init_loss_scale, loss_scale_growth_interval):
    """Raise ValueError naming the first argument that is out of range."""
    if optimizer_type not in OPTIMIZER_TYPES:
        raise ValueError(f"optimizer_type must be one of {OPTIMIZER_TYPES}, got {optimizer_type!r}")
    checks = [
        ("init_lr", init_lr, init_lr > 0, "> 0"),
        ("num_train_steps", num_train_steps, num_train_steps >= 1, ">= 1"),
        ("num_warmup_steps", num_warmup_steps, num_warmup_steps >= 0, ">= 0"),
        ("beta_1", beta_1, 0 <= beta_1 < 1, "in [0, 1)"),
        ("beta_2", beta_2, 0 <= beta_2 < 1, "in [0, 1)"),
        ("epsilon", epsilon, epsilon > 0, "> 0"),
        ("poly_power", poly_power, poly_power is None or poly_power > 0, "> 0 or None"),
        ("end_lr", end_lr, end_lr >= 0, ">= 0"),
        ("num_accumulation_steps", num_accumulation_steps,
         isinstance(num_accumulation_steps, int) and num_accumulation_steps >= 1,
         "an integer >= 1"),
        ("clip_norm", clip_norm, clip_norm is None or clip_norm > 0, "> 0 or None"),
        ("init_loss_scale", init_loss_scale, init_loss_scale >= 1, ">= 1"),
        ("loss_scale_growth_interval", loss_scale_growth_interval,
         loss_scale_growth_interval >= 1, ">= 1"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name} must be {expected}, got {value!r}")


def _learning_rate(global_step, init_lr, num_train_steps, num_warmup_steps, end_lr, power,
                   rescale_decay):
    """The rate of the update that follows `global_step` completed updates.

    step < warm-up: init_lr * step / num_warmup_steps. Otherwise TF's polynomial_decay of
    `decay_lr` over `num_train_steps` evaluated at `step` (clamped to num_train_steps):
    (decay_lr - end_lr) * (1 - step / num_train_steps) ** power + end_lr, where decay_lr is
    init_lr, or with `rescale_decay` the value that makes the decay equal init_lr at the end of
    warm-up (NVIDIA's "avoid step change in learning rate at end of warmup phase"; with end_lr 0
    it is their init_lr / (1 - warmup / total) ** power).
    """
    decay_lr = init_lr
    if rescale_decay and num_warmup_steps < num_train_steps:
        remaining = (1.0 - num_warmup_steps / num_train_steps) ** power
        decay_lr = end_lr + (init_lr - end_lr) / remaining
    step = tf.cast(global_step, tf.float32)
    # (total - step) / total rather than 1 - step / total: no cancellation near the end.
    remaining = (num_train_steps - tf.minimum(step, float(num_train_steps))) / num_train_steps
    decayed = (decay_lr - end_lr) * tf.pow(remaining, power) + end_lr
    if num_warmup_steps == 0:
        return decayed
    warmup = init_lr * (step / float(num_warmup_steps))
    return tf.where(step < num_warmup_steps, warmup, decayed)


def _counter(name):
    """A non-trainable int64 scalar variable starting at 0."""
    return tf1.get_variable(name, shape=[], dtype=tf.int64, initializer=tf1.zeros_initializer(),
                            trainable=False)


def _unshared_zeros(shape, dtype=tf.float32, partition_info=None):
    """Initializer: zeros written into a buffer of the variable's own on every initialisation.

    tf.zeros_initializer builds a Const (so does grappler from a Fill of constants, shared by
    every variable of a shape); the variable starts on the Const's buffer, which the session
    keeps with the initializer's executor, so after the first update each zero-initialised
    variable is held twice: for BERT-base's Adam moments, 880 MiB for the whole run. grappler
    neither folds nor merges Empty with init=True.
    """
    del partition_info
    return tf.raw_ops.Empty(shape=shape, dtype=dtype, init=True)


def _zeros_like_variable(var, suffix):
    """The float32 non-trainable variable `{var}/{suffix}`, as `var`'s shape, starting at 0."""
    return tf1.get_variable(f"{var.op.name}/{suffix}", shape=var.shape, dtype=tf.float32,
                            initializer=_unshared_zeros, trainable=False)


def _slots(var):
    """The first and second moment variables of `var`, under Google's names."""
    return _zeros_like_variable(var, "adam_m"), _zeros_like_variable(var, "adam_v")


def _float32_for_mixed_precision(grads):
    """`grads` unchanged, each through a bitcast to int32 and back: an op pair in none of the
    mixed-precision rewrite's lists, which the rewrite therefore leaves float32.

    The rewrite computes a gradient's products in bf16/fp16 and casts the result to float32 for
    the global norm; without the pair it also lets the update's tf.cond take the bf16 tensor (a
    Switch passes any type) and casts it a second time inside. With it both read one float32
    cast. Grappler removes the pair afterwards: no op runs for it.
    """
    return [tf.bitcast(tf.bitcast(g, tf.int32), tf.float32) for g in grads]


def _unscale(grads, loss_scale):
    """Divide gradients by the loss scale (a power of two, so exactly)."""
    inverse = 1.0 / loss_scale
    return [g * inverse for g in grads]


def _all_finite(grads):
    """bool scalar: no gradient has a NaN or an Inf."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])


def _unscale_and_clip_factor(grads, loss_scale, clip_norm):
    """(factor, norm): the one factor that unscales (`loss_scale`, None without amp) and clips
    `grads` to global norm `clip_norm` (factor None when it would be 1), and the global norm of
    the unscaled gradients (None without clipping).

    The clip factor is tf.clip_by_global_norm's, clip_norm * min(1 / norm, 1 / clip_norm), NaN
    when the norm is not finite; the unscaled norm is the scaled one times 1 / loss_scale, a
    power of two.
    """
    inverse = None if loss_scale is None else 1.0 / loss_scale
    if clip_norm is None:
        return inverse, None
    norm = tf.linalg.global_norm(grads)
    if inverse is not None:
        norm *= inverse
    factor = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
    if inverse is not None:
        factor *= inverse
    return factor, norm


def _compiled(variable_updates, grads, scale):
    """Run `variable_updates([g * scale for g in grads])` (the optimizer's assignments) as one
    XLA computation and return a tensor that is ready once every assignment is done.

    Unfused, each variable's update is a dozen TF kernels, each a pass over a tensor as large as
    the variable (about 0.3 s per BERT-base step on two cores); XLA fuses them into one pass
    over the gradient, the weights and the moments. The arithmetic is the same expression,
    within a rounding of each operation (XLA may fuse a multiply and an add).
    """
    @tf.function(jit_compile=True, autograph=False)
    def run(grads, scale):
        if scale is not None:
            grads = [g * scale for g in grads]
        variable_updates(grads)
        return tf.constant(True)

    return run(grads, scale)


def _is_excluded(var):
    """Whether `var` is exempt from weight decay (and from LAMB's trust ratio)."""
    return any(re.search(pattern, var.op.name) for pattern in EXCLUDE_FROM_WEIGHT_DECAY)


def _moments(grad, m, v, beta_1, beta_2):
    next_m = beta_1 * m + (1.0 - beta_1) * grad
    next_v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
    return next_m, next_v


def _adam_updates(grads, tvars, slots, lr, weight_decay_rate, beta_1, beta_2, epsilon,
                  global_step=None):
    """google-research/bert's AdamWeightDecayOptimizer step (no bias correction); with
    `global_step`, the moments are bias-corrected for update number global_step + 1 (AdamW)."""
    correction_1 = correction_2 = 1.0
    if global_step is not None:
        t = tf.cast(global_step + 1, tf.float32)
        correction_1, correction_2 = _bias_correction(beta_1, t), _bias_correction(beta_2, t)
    ops = []
    for grad, var, (m, v) in zip(grads, tvars, slots, strict=True):
        next_m, next_v = _moments(grad, m, v, beta_1, beta_2)
        if global_step is None:
            update = next_m / (tf.sqrt(next_v) + epsilon)
        else:
            update = (next_m / correction_1) / (tf.sqrt(next_v / correction_2) + epsilon)
        if weight_decay_rate and not _is_excluded(var):
            update += weight_decay_rate * var
        ops += [var.assign_sub(lr * update), m.assign(next_m), v.assign(next_v)]
    return ops


def _bias_correction(beta, t):
    """1 - beta**t, computed as -expm1(t * log(beta)) so that it keeps full float32 precision
    (1 - 0.999**1 in float32 loses four digits to cancellation)."""
    if beta == 0:
        return 1.0
    return -tf.math.expm1(t * math.log(beta))


def _lamb_updates(grads, tvars, slots, lr, global_step, weight_decay_rate, beta_1, beta_2,
                  epsilon):
    """LAMB step: bias-corrected Adam direction plus decoupled weight decay, scaled per variable
    by the trust ratio ||w|| / ||update||, 1 when either norm is 0. The variables excluded from
    weight decay get ratio 1 too (the issue's rule, and the default of TF Addons' and the TF Model
    Garden's LAMB); NVIDIA's TF1 LAMB applies the ratio to every variable.
    """
    t = tf.cast(global_step + 1, tf.float32)  # this update's number, counting from 1
    correction_1 = _bias_correction(beta_1, t)
    correction_2 = _bias_correction(beta_2, t)
    ops = []
    for grad, var, (m, v) in zip(grads, tvars, slots, strict=True):
        next_m, next_v = _moments(grad, m, v, beta_1, beta_2)
        update = (next_m / correction_1) / (tf.sqrt(next_v / correction_2) + epsilon)
        if not _is_excluded(var):
            if weight_decay_rate:
                update += weight_decay_rate * var
            w_norm = tf.norm(var)
            u_norm = tf.norm(update)
            ratio = tf.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
            update *= ratio
        ops += [var.assign_sub(lr * update), m.assign(next_m), v.assign(next_v)]
    return ops


def _update_loss_scale(finite, loss_scale, good_steps, growth_interval):
    """Grow the scale after `growth_interval` consecutive finite updates, shrink it after a
    non-finite one (never below 1); returns the op."""
    good = tf.where(finite, good_steps + 1, tf.zeros_like(good_steps))
    grow = good >= growth_interval
    grown = loss_scale * LOSS_SCALE_MULTIPLIER
    grown = tf.where(tf.math.is_finite(grown), grown, loss_scale)
    shrunk = tf.maximum(loss_scale / LOSS_SCALE_MULTIPLIER, 1.0)
    new_scale = tf.where(finite, tf.where(grow, grown, loss_scale), shrunk)
    new_good = tf.where(grow, tf.zeros_like(good), good)
    return tf.group(loss_scale.assign(new_scale), good_steps.assign(new_good))


def _micro_batch_counter():
    """The int32 variable `local_step` (NVIDIA's name): micro-batches of the update in progress."""
    with tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE):
        return tf1.get_variable("local_step", shape=[], dtype=tf.int32,
                                initializer=tf1.zeros_initializer(), trainable=False)


def step_seed(seed, rank=0, num_accumulation_steps=1):
    """int64 [2] seed of this run of train_op: a function of (`seed`, global step, micro-batch
    index, `rank`) alone, for stateless random ops (`modeling.stateless_dropout`).

    Every update, micro-batch and rank draws differently, and a run restarted from a checkpoint
    draws exactly what the uninterrupted run drew. Build it in the training graph before
    `create_optimizer` (it reads the variables that the update increments, and the update
    depends on what is drawn, so each run reads them before they change).
    """
    global_step = tf1.train.get_or_create_global_step()
    value = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 0], tf.int64), tf.cast(global_step.read_value(), tf.int64))
    if num_accumulation_steps > 1:
        value = tf.random.experimental.stateless_fold_in(
            value, tf.cast(_micro_batch_counter().read_value(), tf.int64))
    return tf.random.experimental.stateless_fold_in(value, rank)


def _accumulate_and_apply(grads, tvars, n, apply, distributed, post_accumulation, loss_scale):
    """Add this micro-batch's gradients to fp32 accumulators; on every n-th run apply them."""
    local_step = _micro_batch_counter()
    accums = [_zeros_like_variable(v, "accum") for v in tvars]
    count = local_step.read_value()
    accumulate = tf.cond(
        tf.equal(count, 0),
        lambda: tf.group([a.assign(g) for a, g in zip(accums, grads, strict=True)]),
        lambda: tf.group([a.assign_add(g) for a, g in zip(accums, grads, strict=True)]))

    def apply_sums():
        sums = [a.read_value() for a in accums]
        if post_accumulation:
            # In the loss-scaled range, like the per-micro-batch allreduce (module docstring).
            if loss_scale is not None:
                sums = [s * loss_scale for s in sums]
            sums = distributed.allreduce_gradients(sums)
            if loss_scale is not None:
                sums = _unscale(sums, loss_scale)
        return apply(sums, None, _all_finite(sums))

    with tf.control_dependencies([accumulate]):
        applied = tf.cond(tf.equal(count, n - 1), apply_sums, tf.no_op)
    with tf.control_dependencies([applied]):
        return local_step.assign((count + 1) % n)
