"""SSD losses (OD API): weighted smooth L1 for boxes, sigmoid cross-entropy with
hard negative mining or sigmoid focal loss for classes, normalized by the
number of matched anchors.

Hard example mining follows OD API's ``HardExampleMiner`` (3 negatives per
positive, at least 3 per image, 3000 examples at most) without its
IoU-0.99 NMS over the candidate boxes, which only removes near-duplicates.
"""
from __future__ import annotations

import tensorflow as tf


def smooth_l1(predictions, targets, weights, delta: float = 1.0):
    """[B, A] loss: Huber(delta) summed over the 4 coordinates, times weights."""
    diff = tf.abs(predictions - targets)
    per_coord = tf.where(diff < delta, 0.5 * diff * diff, delta * diff - 0.5 * delta * delta)
    return tf.reduce_sum(per_coord, axis=-1) * weights


def sigmoid_ce(logits, targets, weights):
    """[B, A] sigmoid cross-entropy summed over classes (background included), times weights."""
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(ce, axis=-1) * weights


def sigmoid_focal(logits, targets, weights, alpha: float = 0.25, gamma: float = 2.0):
    """[B, A] focal loss (Lin et al.) summed over classes, times weights."""
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    p = tf.sigmoid(logits)
    p_t = targets * p + (1 - targets) * (1 - p)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    return tf.reduce_sum(alpha_t * tf.pow(1 - p_t, gamma) * ce, axis=-1) * weights


def hard_negative_mask(class_loss, positives, class_weights, negatives_per_positive: int = 3,
                       min_negatives: int = 3, max_examples: int = 3000):
    """[B, A] 1 for positives and the hardest negatives of each image."""
    negatives = (1.0 - positives) * class_weights
    num_pos = tf.reduce_sum(positives, axis=1)
    num_neg = tf.minimum(
        tf.maximum(negatives_per_positive * num_pos, float(min_negatives)),
        tf.maximum(float(max_examples) - num_pos, 0.0),
    )
    num_neg = tf.minimum(num_neg, tf.reduce_sum(negatives, axis=1))
    neg_loss = tf.where(negatives > 0, class_loss, -1.0)
    order = tf.argsort(tf.argsort(neg_loss, axis=1, direction="DESCENDING"), axis=1)  # rank of each anchor
    chosen = tf.cast(tf.cast(order, tf.float32) < num_neg[:, None], tf.float32) * negatives
    return positives + chosen


def ssd_loss(outputs, targets, loss_type: str, focal_alpha: float = 0.25, focal_gamma: float = 2.0):
    """Total, localization and classification loss of a batch (before L2)."""
    positives = targets["box_weights"]
    loc = smooth_l1(outputs["box_encodings"], targets["box_targets"], positives)
    if loss_type == "sigmoid_focal":
        cls = sigmoid_focal(outputs["class_predictions"], targets["class_targets"], targets["class_weights"],
                            focal_alpha, focal_gamma)
    else:
        cls = sigmoid_ce(outputs["class_predictions"], targets["class_targets"], targets["class_weights"])
        cls = cls * tf.stop_gradient(hard_negative_mask(cls, positives, targets["class_weights"]))
    normalizer = tf.maximum(tf.reduce_sum(positives), 1.0)
    loc_loss = tf.reduce_sum(loc) / normalizer
    cls_loss = tf.reduce_sum(cls) / normalizer
    return loc_loss + cls_loss, loc_loss, cls_loss
