"""The embedded simulated grid: the default backend for a first run and for capacity planning."""
