"""A bare reference for `bench/job_list.py`: the job list's SQL behind a minimal Django view.

No middleware, no DRF, no ORM: the token is looked up with one query, the page is read with the
same keyset SQL the portal runs (one arm per team for members, the primary key for operators),
and the rows go out with the same 36 keys. It runs under the same server (daphne, one process)
on the same database, so the portal's figure divided by this one is what the portal's own layers
cost. Never part of the portal: only the benchmark starts it.
"""
