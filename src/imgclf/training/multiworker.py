"""The training loop for several workers (``MultiWorkerMirroredStrategy``).

Keras 3's ``fit`` cannot run under ``MultiWorkerMirroredStrategy`` (3.15 reduces scalar
metrics along axis 0 across workers and fails), so several workers train with this loop,
the one TensorFlow documents for that strategy: ``strategy.run`` a step on each worker's
shard, average the loss over the global batch, let the optimizer all-reduce the gradients.
Every worker evaluates the whole validation split locally (same weights, same numbers), and
the same epoch callbacks run as under ``fit``, so the run folder looks the same.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def fit(model, train_data, val_data, *, epochs: int, initial_epoch: int, steps_per_epoch: int,
        global_batch: int, dist, callbacks, class_weight: dict | None, one_hot: bool, verbose: int) -> None:
    import tensorflow as tf

    strategy = dist.strategy
    loss_fn = model.loss
    per_example = type(loss_fn).from_config({**loss_fn.get_config(), "reduction": None})
    weights = (tf.constant([class_weight[i] for i in range(len(class_weight))], tf.float32)
               if class_weight else None)
    optimizer = model.optimizer

    def labels_of(y):
        return tf.argmax(y, axis=-1, output_type=tf.int32) if one_hot else tf.cast(y, tf.int32)

    @tf.function
    def train_step(iterator):
        def step(x, y):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                losses = tf.cast(per_example(y, probs), tf.float32)
                if weights is not None:
                    losses = losses * tf.gather(weights, labels_of(y))
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels_of(y)),
                                            tf.float32))
            return tf.reduce_sum(losses), correct, tf.cast(tf.shape(probs)[0], tf.float32)

        x, y = next(iterator)
        out = strategy.run(step, args=(x, y))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in out]

    @tf.function
    def eval_step(x, y):
        probs = model(x, training=False)
        losses = tf.cast(per_example(y, probs), tf.float32)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels_of(y)),
                                        tf.float32))
        return tf.reduce_sum(losses), correct, tf.cast(tf.shape(probs)[0], tf.float32)

    iterator = iter(strategy.experimental_distribute_dataset(train_data))
    for cb in callbacks:
        cb.set_model(model)
    for epoch in range(initial_epoch, epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch)
        t = time.time()
        totals = np.zeros(3)
        for _ in range(steps_per_epoch):
            totals += np.array([float(v) for v in train_step(iterator)])
        logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
        if val_data is not None:
            v = np.zeros(3)
            for x, y in val_data:
                v += np.array([float(a) for a in eval_step(x, y)])
            logs.update(val_loss=v[0] / v[2], val_accuracy=v[1] / v[2])
        if verbose:
            text = " - ".join(f"{k}: {val:.4f}" for k, val in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.time() - t:.0f}s - {text}", file=sys.stdout, flush=True)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
