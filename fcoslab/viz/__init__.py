"""Pictures for notebooks and reports: plots (:mod:`.plots`), the prediction viewer widget (:mod:`.viewer`)
and the anatomy of one batch through FCOS (:mod:`.anatomy`); the box drawing they share is
:mod:`fcoslab.draw` (at the top, as training and prediction draw too).

May import every package but :mod:`fcoslab.apps`. Nothing is re-exported: ``from fcoslab.viz import plots``
loads matplotlib only where it is wanted.
"""
