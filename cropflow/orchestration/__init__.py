"""The orchestration wing: everything that knows Prefect, apart from ``flows/`` and ``tasks/``.

Runtime policies that tasks use (:mod:`.locks`, :mod:`.caching`, :mod:`.retries`) and the
control plane the CLI uses (:mod:`.project`, :mod:`.deploy`, :mod:`.runs`, :mod:`.api`,
:mod:`.stack`). The library (``cropflow/`` outside this package, and ``models/``) never
imports Prefect; nothing here is imported by ``import cropflow``.
"""
