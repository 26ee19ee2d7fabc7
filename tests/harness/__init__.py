"""The test harness: what the tests and the benchmarks share to run real jobs, servers and stores.

``make install`` puts ``tests/`` on the virtual environment's path (a ``.pth`` file), so
``import harness`` works the same from ``tests/``, ``bench/`` and the child processes they start.
"""
