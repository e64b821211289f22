"""The admission cycle as first written, kept as the oracle the fast cycle is compared against.

A straightforward version of `jobs.policy.run_cycle`: one job at a time, every explanation built in
full. The fast cycle must take the same decisions and give the same explanations on every snapshot.
"""
