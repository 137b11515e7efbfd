"""PrefLoop's Django-free core: what every app, the training core and the samplers share.

`chat` (the one chat template), `errors` (a setting refused by name), `hardware` (device and dtype from the
machine), `outcomes` (the vocabulary of a pairwise decision) and `rows` (reading and checking prompt, pair and
preference files in every format). Nothing here imports Django or Celery, so `training/dpo/`,
`generation/backends/` and their command lines load without them.
"""
