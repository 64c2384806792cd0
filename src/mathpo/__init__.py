"""mathpo: self-training of language models for step-by-step math reasoning.

Stages (each a `mathpo` subcommand): data -> sample -> grade -> pairs -> train -> eval, chained by `loop`.
"""

__version__ = "0.1.0"
