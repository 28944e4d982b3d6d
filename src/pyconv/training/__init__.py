"""How a ``Model`` trains, apart from how its layers are wired (``pyconv.models``,
``pyconv.graph``):

- ``tape.py``: what a forward pass records for the backward (one entry per layer call);
- ``compile.py``: ``CompileMixin``: compile, the losses and metrics per output, the loss
  of a batch and its gradient (softmax/sigmoid folded into cross-entropy);
- ``loop.py``: ``TrainingLoopMixin``: fit, evaluate, predict, train_on_batch,
  compute_gradients, with the checks of their arguments and data.
"""
