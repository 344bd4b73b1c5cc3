"""Training and fine-tuning on image folders, on one process or many (torchrun).

Owns the run settings and recipes (:mod:`.config`, the one place for defaults), the steps
before the first batch (:mod:`.setup`, :mod:`.loaders`), the loop (:mod:`.trainer`), its
validation (:mod:`.validate`), optimizers and schedules (:mod:`.optim`), checkpoints and
exact resume (:mod:`.checkpoint`), distillation (:mod:`.distill`), run outputs (:mod:`.outputs`), process groups
(:mod:`.distributed`, :mod:`.torchrun`) and the CPU kernels swapped in for training
(:mod:`.accel`).

May import: ``config``, ``model``, ``fold``, ``cost``, ``builders``, ``data``, ``weights``, ``files``, ``untrusted``,
``optional``.
"""
