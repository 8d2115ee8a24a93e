"""The developer kit of phonon-outbound: everything that runs on a developer's machine, nothing
that runs on AWS.

- :mod:`.cli` — the ``phonon-outbound`` command (run | check | simulate | redrive);
- :mod:`.check` — ``phonon-outbound check``: the ingest rules on local files, no AWS;
- :mod:`.redrive` — ``phonon-outbound redrive``: moves a deployed stack's dead letters back;
- :mod:`.local` — the local runner: the template's resources on an embedded moto server, the
  real handlers driven as Lambda would drive them, the local state between runs;
- :mod:`.simulator` — the Phonon Outbound API simulator (real HTTP on loopback, fault modes,
  webhooks), used by local runs and the tests.

Why a package of its own, and why this name: the Lambda layer (``layers/outbound/``, the
``phonon_outbound`` package) is shipped to every function as is, so whatever sits in it is
deployed, loaded from the layer's zip and counted against the functions' size. The kit needs
moto, pyyaml and werkzeug, which the layer must not carry (``layers/outbound/requirements.txt``).
A subpackage such as ``phonon_outbound.dev`` could not live outside ``layers/outbound/`` without
turning ``phonon_outbound`` into a namespace package split across two folders; a top-level
``phonon_outbound_dev`` in ``devkit/`` keeps the layer's package whole, says by its name that
it is the development side of ``phonon_outbound``, and makes the rule simple to check: no
module of the layer imports ``phonon_outbound_dev`` (``tests/unit/test_layer_contents.py``).
The kit depends on the layer's package, never the other way round; the domain code's hooks the
local runner uses (``wiring.set_continuation``, ``wiring.set_throttle``) are generic injection
points that know nothing of the kit. ``make setup`` installs both packages (pyproject.toml).
"""
