# run on the GPU: where a constrained 64-row step's host time goes
import cProfile, pstats, sys
argv = sys.argv[1:]
sys.argv = ["x", *argv]
src = open("bench/structured_output.py").read().split("masks = engine.runner.masks")[0]
exec(src)
for constrained in (False, True):
    step_ms(64, constrained)
    pr = cProfile.Profile(); pr.enable(); t = step_ms(64, constrained); pr.disable()
    print(f"== constrained={constrained}: {t:.2f} ms/step")
    pstats.Stats(pr).sort_stats("tottime").print_stats(14)
