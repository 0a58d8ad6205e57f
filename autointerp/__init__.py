"""autointerp: LLM-assisted automated interpretability for transformer language models.

Stages (data flows one way):
    models/ -> mine/ -> explain/ -> score/ -> validate/      (the neuron pipeline)
    models/ -> tasks/ -> patching/                           (the task pipeline)
    llm/ is asked by explain, score, tasks, validate; store/ is the only code that writes SQL.
Faces: cli.py, batch/, serve/, investigate/.
"""

__version__ = "0.1.0"
