import atexit
import gc

from harness.app import main

# Registered before a job imports MLflow, so it runs after MLflow's exit handlers (atexit is last in, first
# out). It spares the interpreter's final garbage-collection pass over TensorFlow's and MLflow's objects:
# ~2 s per process, freeing nothing the operating system does not. Every store write is committed by then.
atexit.register(gc.freeze)

main()
