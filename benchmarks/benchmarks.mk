.PHONY: bench bench-production profile load

# Included by the Makefile: the benchmarks and the load test (docs/performance.md).

# benchmarks/REPORT.md and report.png: the Bento against plain FastAPI, side by side (~10 min).
bench: model ## benchmarks/REPORT.md: the Bento against plain FastAPI (~10 min)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# benchmarks/REPORT-production.md: the production model's architecture (SigLIP-B/16, Food-101
# head, random weights: models/build_production_architecture.py) four ways, side by side, at the
# precision the start-up choice serves; REPORT-production-fp32.md at fp32, as the arm64 image
# serves it (~30 min). 16 closed-loop users queue for seconds on 2 cores: a 20 s batching budget
# measures throughput, where the 5 s default would measure shedding.
PRODUCTION_ARGS = --bento-env TIKKA_MAX_LATENCY_MS=20000
bench-production: model ## the production architecture's reports (~30 min)
	$(BIN)/python models/build_production_architecture.py
	$(BIN)/python benchmarks/production.py $(PRODUCTION_ARGS) $(BENCH_ARGS)
	$(BIN)/python benchmarks/production.py $(PRODUCTION_ARGS) --bento-env TIKKA_PRECISION=fp32 \
		--report benchmarks/REPORT-production-fp32.md $(BENCH_ARGS)

# benchmarks/PROFILE.md: where an idle /predict's milliseconds go, sampled with py-spy (~2 min).
profile: model ## benchmarks/PROFILE.md: an idle request, sampled with py-spy
	$(BIN)/python benchmarks/profile_idle.py $(PROFILE_ARGS)

# Locust against any deployment: make load HOST=https://api.example.com USERS=16 DURATION=60s
HOST ?= http://127.0.0.1:$(PORT)
USERS ?= 16
DURATION ?= 60s
load: $(call light,load) ## Locust against HOST
	.venv-load/bin/locust -f locustfile.py --headless --host $(HOST) -u $(USERS) -r $(USERS) -t $(DURATION) $(LOCUST_ARGS)

