"""The programs: the ``fcoslab`` command (:mod:`.cli` with :mod:`.cli_predict` and :mod:`.cli_research`),
the notebook runner (``python -m fcoslab.apps.notebooks``) and the browser screenshot
(``python -m fcoslab.apps.browser``).

May import every package; none imports this one. Nothing is re-exported, so that ``python -m`` runs each
module once (the console script is ``fcoslab.apps.cli:main``).
"""
