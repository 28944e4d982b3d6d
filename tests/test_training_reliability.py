"""Training under faults and hostile arguments: no Ctrl-C press lost, all-or-nothing
optimizer steps, arguments and data checked before any weight changes."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time

import numpy as np
import pytest

import pyconv
from pyconv import layers, optimizers


def _default_sigint():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("the test runner replaced Python's SIGINT handler")


def test_no_ctrl_c_press_is_lost_around_hold_interrupts():
    """Presses at random moments of many short held blocks (and between them): each one
    raises KeyboardInterrupt exactly once, and the default handler is back afterwards. A
    press landing while the handler was being installed used to be forgotten."""
    _default_sigint()
    presses = 500
    # acked starts at -1: the first press waits until the main thread is inside its try
    # (a press during sender.start() would escape the test)
    state = {"sent": 0, "acked": -1, "received": 0, "finished": False}
    rng = random.Random(0)

    def press():
        deadline = time.monotonic() + 2
        while state["sent"] < presses and time.monotonic() < deadline:
            # one press in flight at a time: the last one was received (plain polling: a
            # lock taken by the main thread could be left held by a KeyboardInterrupt)
            if state["acked"] != state["sent"]:
                time.sleep(1e-5)
                continue
            time.sleep(rng.random() * 2e-4)
            state["sent"] += 1
            os.kill(os.getpid(), signal.SIGINT)
        state["finished"] = True

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the sender runs soon after each acknowledgement
    sender = threading.Thread(target=press)
    give_up = time.monotonic() + 2.5  # a lost press: fail, not hang
    try:
        sender.start()
        while True:
            try:
                while True:
                    # inside the try: a press may land on any line of this loop
                    state["acked"] = state["received"]
                    if state["finished"] and (
                        state["received"] == state["sent"] or time.monotonic() > give_up
                    ):
                        break
                    with optimizers.hold_interrupts(strict=rng.random() < 0.5):
                        with optimizers.hold_interrupts():  # nested blocks too
                            sum(range(rng.randrange(200)))
                sender.join()
                break
            except KeyboardInterrupt:
                state["received"] += 1
    finally:
        sys.setswitchinterval(switch)
    assert state["sent"] == presses
    assert state["received"] == presses
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- fit / evaluate / predict arguments -----------------------------------------------------


def _mlp(units=3, activation="softmax", loss="sparse_categorical_crossentropy", opt="sgd"):
    pyconv.set_random_seed(0)
    model = pyconv.Sequential(
        [pyconv.Input((4,)), layers.Dense(5, activation="relu"), layers.Dense(units, activation)]
    )
    model.compile(opt, loss, metrics=["accuracy"])
    return model


def _data(n=24, classes=3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, classes, n)


def _unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"batch_size": "32"}, TypeError, "batch_size"),
        ({"batch_size": 2.7}, TypeError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"epochs": 1.9}, TypeError, "epochs"),
        ({"epochs": "2"}, TypeError, "epochs"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"initial_epoch": 1.0}, TypeError, "initial_epoch"),
        ({"initial_epoch": -1}, ValueError, "initial_epoch"),
        ({"epochs": 2, "initial_epoch": 3}, ValueError, "initial_epoch"),
        ({"verbose": "1"}, TypeError, "verbose"),
        ({"verbose": 3}, ValueError, "verbose"),
        ({"validation_split": "0.2"}, TypeError, "validation_split"),
        ({"validation_split": True}, TypeError, "validation_split"),
        ({"validation_split": 1.0}, ValueError, "validation_split"),
        ({"validation_split": float("nan")}, ValueError, "validation_split"),
        ({"validation_batch_size": 0}, ValueError, "validation_batch_size"),
        ({"shuffle": "no"}, TypeError, "shuffle"),
        ({"callbacks": pyconv.callbacks.History()}, TypeError, "callbacks"),
    ],
)
def test_fit_rejects_arguments_of_the_wrong_type_or_range(kwargs, error, word):
    model = _mlp()
    x, y = _data()
    before = model.get_weights()
    with pytest.raises(error, match=word):
        model.fit(x, y, **{"verbose": 0, **kwargs})
    assert _unchanged(model, before) and model.optimizer.iterations == 0


def test_numpy_integers_and_keras_verbose_flags_are_accepted():
    model = _mlp()
    x, y = _data()
    model.fit(x, y, batch_size=np.int64(8), epochs=np.int32(1), verbose=False)
    assert model.optimizer.iterations == 3
    model.evaluate(x, y, batch_size=np.uint8(8), verbose=0)


@pytest.mark.parametrize("call", ["evaluate", "predict"])
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"batch_size": "8"}, TypeError), ({"batch_size": 1.5}, TypeError),
     ({"batch_size": -1}, ValueError), ({"verbose": 5}, ValueError)],
)  # fmt: skip
def test_evaluate_and_predict_check_their_arguments(call, kwargs, error):
    model = _mlp()
    x, y = _data()
    with pytest.raises(error, match=next(iter(kwargs))):
        if call == "evaluate":
            model.evaluate(x, y, **kwargs)
        else:
            model.predict(x, **kwargs)


# --- empty data -----------------------------------------------------------------------------


def test_empty_data_is_refused_not_scored_as_perfect():
    """An empty validation set used to give val_loss 0.0 (a perfect model to EarlyStopping
    and ModelCheckpoint) and an empty evaluate [0.0, 0.0]."""
    model = _mlp()
    x, y = _data()
    before = model.get_weights()
    with pytest.raises(ValueError, match="x_val is empty"):
        model.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0)
    with pytest.raises(ValueError, match="x is empty"):
        model.evaluate(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="x is empty"):
        model.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="x is empty"):
        model.train_on_batch(x[:0], y[:0])
    with pytest.raises(ValueError, match="leaves no validation data"):
        model.fit(x[:3], y[:3], validation_split=1e-20, verbose=0)
    with pytest.raises(ValueError, match="leaves no training data"):
        model.fit(x[:3], y[:3], validation_split=0.9, verbose=0)
    assert _unchanged(model, before)
    assert model.predict(x[:0]).shape == (0, 3)  # no score to fake: an empty answer


def test_validation_data_is_checked_before_training():
    """A wrong shape or label in validation_data used to surface after an epoch."""
    model = _mlp()
    x, y = _data()
    before = model.get_weights()
    with pytest.raises(ValueError, match="shape"):
        model.fit(x, y, validation_data=(x[:, :3], y), verbose=0)
    with pytest.raises(ValueError, match=r"y_val must be in \[0, 3\)"):
        model.fit(x, y, validation_data=(x, y + 5), verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(x, y, validation_data=(x, y, np.ones(3)), verbose=0)
    assert _unchanged(model, before)


# --- class and sample weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_weight", "error", "word"),
    [
        ({-1: 100.0}, ValueError, "key -1"),  # used to weight the last class
        ({3: 2.0}, ValueError, "key 3"),  # no class 3 for 3 outputs
        ({1.0: 2.0}, TypeError, "keys"),
        ({"1": 2.0}, TypeError, "keys"),
        ({True: 2.0}, TypeError, "keys"),
        ({0: float("nan")}, ValueError, "class_weight"),
        ({0: -1.0}, ValueError, "class_weight"),
        ({0: "2"}, TypeError, "class_weight"),
        ([1.0, 2.0], TypeError, "class_weight"),
    ],
)
def test_class_weight_must_name_classes_of_the_output(class_weight, error, word):
    model = _mlp()
    x, y = _data()
    with pytest.raises(error, match=word):
        model.fit(x, y, class_weight=class_weight, verbose=0)
    assert model.optimizer.iterations == 0


def test_class_weight_weights_the_named_class():
    x, y = _data()
    a, b = _mlp(), _mlp()
    a.fit(x, y, class_weight={0: 3.0, 2: 0.5}, shuffle=False, verbose=0)
    b.fit(x, y, sample_weight=np.array([3.0, 1.0, 0.5])[y], shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize(
    ("sample_weight", "error"),
    [(np.ones(5), ValueError), (np.full(24, np.nan), ValueError), (-np.ones(24), ValueError),
     (np.full(24, np.inf), ValueError), (np.array(["1"] * 24), TypeError),
     (np.ones((24, 2)), ValueError)],
)  # fmt: skip
def test_sample_weight_must_be_finite_non_negative_and_one_per_sample(sample_weight, error):
    model = _mlp()
    x, y = _data()
    for call in (
        lambda: model.fit(x, y, sample_weight=sample_weight, verbose=0),
        lambda: model.train_on_batch(x, y, sample_weight=sample_weight),
        lambda: model.evaluate(x, y, sample_weight=sample_weight, verbose=0),
    ):
        with pytest.raises(error, match="sample_weight"):
            call()
    assert model.optimizer.iterations == 0


# --- labels against the loss, before any step -----------------------------------------------


def test_an_out_of_range_label_late_in_the_data_stops_fit_before_any_step():
    """Label 7 at sample 200 of a 3-class model: found before the first step (it used to
    surface at step 7, after 6 steps had changed the weights)."""
    pyconv.set_random_seed(0)
    model = _mlp()
    x, y = _data(256)
    y[200] = 7
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 3\)"):
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0)
    assert _unchanged(model, before) and model.optimizer.iterations == 0


def test_binary_crossentropy_with_class_labels_is_refused():
    """10-class labels with a sigmoid + binary cross-entropy used to train to a loss of
    -15774 without a word (pyconv train --model smiley_cnn --dataset mnist_sample)."""
    model = _mlp(units=1, activation="sigmoid", loss="binary_crossentropy")
    x, y = _data(classes=10)
    y[0] = 9
    with pytest.raises(ValueError, match=r"binary_crossentropy needs targets y in \[0, 1\].*"
                       r"sparse_categorical_crossentropy"):  # fmt: skip
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.train_on_batch(x, y)
    assert model.optimizer.iterations == 0
    model.fit(x, (y > 4).astype(np.float32), verbose=0)  # 0/1 targets train


@pytest.mark.parametrize(
    ("loss", "units", "activation", "y", "word"),
    [
        ("sparse_categorical_crossentropy", 3, "softmax", np.full(24, 1.5), "integer"),
        ("sparse_categorical_crossentropy", 3, "softmax", np.full(24, np.nan), "integer"),
        ("sparse_categorical_crossentropy", 3, "softmax", np.full(24, -1), r"\[0, 3\)"),
        ("categorical_crossentropy", 3, "softmax", np.zeros((24, 4)), "shape"),
        ("categorical_crossentropy", 3, "softmax", np.full((24, 3), 2.0), r"\[0, 1\]"),
        ("categorical_crossentropy", 3, "softmax", np.zeros(24), "shape"),
        ("mse", 3, "linear", np.full((24, 3), np.inf), "finite"),
    ],
)
def test_targets_are_checked_against_the_loss(loss, units, activation, y, word):
    model = _mlp(units, activation, loss)
    x, _ = _data()
    with pytest.raises(ValueError, match=word):
        model.fit(x, y, verbose=0)
    assert model.optimizer.iterations == 0


# --- optimizers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "word"),
    [
        (lambda: optimizers.Adam(epsilon=float("nan")), ValueError, "epsilon"),
        (lambda: optimizers.Adam(epsilon=-1e-7), ValueError, "epsilon"),
        (lambda: optimizers.Adam(epsilon=0), ValueError, "epsilon"),
        (lambda: optimizers.RMSprop(epsilon="1e-7"), TypeError, "epsilon"),
        (lambda: optimizers.Adam(beta_1=float("nan")), ValueError, "beta_1"),
        (lambda: optimizers.Adam(beta_2=1.0), ValueError, "beta_2"),
        (lambda: optimizers.Adam(amsgrad="yes"), TypeError, "amsgrad"),
        (lambda: optimizers.SGD(momentum=float("nan")), ValueError, "momentum"),
        (lambda: optimizers.SGD(momentum="0.9"), TypeError, "momentum"),
        (lambda: optimizers.SGD(nesterov=1), TypeError, "nesterov"),
        (lambda: optimizers.SGD(learning_rate=float("inf")), ValueError, "learning_rate"),
        (lambda: optimizers.SGD(learning_rate=0), ValueError, "learning_rate"),
        (lambda: optimizers.SGD(learning_rate=True), TypeError, "learning_rate"),
        (lambda: optimizers.RMSprop(rho=-0.1), ValueError, "rho"),
        (lambda: optimizers.RMSprop(centered=None), TypeError, "centered"),
        (lambda: optimizers.SGD(clipnorm=0), ValueError, "clipnorm"),
        (lambda: optimizers.SGD(clipvalue=float("nan")), ValueError, "clipvalue"),
        (lambda: optimizers.SGD(global_clipnorm=-1), ValueError, "global_clipnorm"),
        (lambda: optimizers.SGD(weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda: optimizers.SGD(name=3), ValueError, "name"),
    ],
)
def test_optimizer_arguments_are_validated(make, error, word):
    with pytest.raises(error, match=word):
        make()


def test_optimizer_state_setters_are_validated():
    opt = optimizers.Adam()
    for bad, error in ((-5, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)):
        with pytest.raises(error, match="iterations"):
            opt.iterations = bad
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="learning_rate"):
            opt.learning_rate = bad
    assert opt.iterations == 0 and opt.learning_rate == 0.001
    opt.iterations = np.int64(7)
    assert opt.iterations == 7 and type(opt.iterations) is int


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_a_failed_optimizer_step_changes_nothing(name):
    """A gradient of the wrong shape on the last variable (or a slot of the wrong shape)
    used to leave the variables before it updated and iterations advanced."""
    opt = optimizers.get({"class_name": {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}[
        name], "config": {"momentum": 0.5} if name != "adam" else {}})  # fmt: skip
    model = _mlp(opt=opt)
    x, y = _data()
    model.train_on_batch(x, y)  # slots exist
    state = (model.get_weights(), opt.iterations, {k: {s: a.copy() for s, a in v.items()}
                                                    for k, v in opt.slots.items()})  # fmt: skip
    variables = model.trainable_weights
    for v in variables:
        v.grad = np.ones_like(v.value)
    variables[-1].grad = np.ones(7, np.float32)
    with pytest.raises(ValueError, match="gradient"):
        opt.apply(variables)
    variables[-1].grad = np.ones_like(variables[-1].value)
    slot = next(iter(opt.slots[variables[-1].name]))
    opt.slots[variables[-1].name][slot] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="slot"):
        opt.apply(variables)
    opt.slots[variables[-1].name][slot] = state[2][variables[-1].name][slot]
    assert _unchanged(model, state[0]) and opt.iterations == state[1]
    for k, v in opt.slots.items():
        for s, a in v.items():
            np.testing.assert_array_equal(a, state[2][k][s])


def test_set_weights_with_one_bad_array_changes_nothing():
    model = _mlp()
    before = model.get_weights()
    bad = [w + 1 for w in before]
    bad[-1] = np.ones(7)  # the last one has the wrong shape
    with pytest.raises(ValueError):
        model.set_weights(bad)
    assert _unchanged(model, before)
    bad[-1] = before[-1].astype(np.complex64)
    with pytest.raises((TypeError, ValueError)):
        model.set_weights(bad)
    assert _unchanged(model, before)


def test_other_entry_points_refuse_what_they_used_to_take_silently():
    model = _mlp()
    x, y = _data()
    with pytest.raises(TypeError, match="real numeric"):
        model.predict(x.astype(np.complex64))  # the imaginary part was dropped
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 3\)"):
        model.compute_gradients(x, y + 3)
    with pytest.raises(TypeError, match="return_dict"):
        model.train_on_batch(x, y, return_dict="yes")
    with pytest.raises(TypeError, match="layers must be a list"):
        model.layer_outputs(x, layers="dense")  # used to look up "d", "e", ...
    with pytest.raises(TypeError, match="training"):
        model(x, training="no")
    with pytest.raises(TypeError, match="logits"):
        model.backward_to(x, model.layers[0], np.ones((24, 3)), logits="no")
    with pytest.raises(TypeError, match="index"):
        model.get_layer(index=True)
    with pytest.raises(ValueError, match="out of range"):
        model.get_layer(index=5)
    with pytest.raises(ValueError, match="loss_weights"):
        model.compile("sgd", "mse", loss_weights=float("nan"))
    with pytest.raises(TypeError, match="line_length"):
        model.summary(line_length="80")
    assert model.optimizer.iterations == 0
