# The two commands of the README's quick start:
#   make showcase   set up .venv and run pipelines/showcase.yaml
#   make test       set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup showcase test clean samples augmentation-experiment

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	scripts/install-system-packages
	$(PYTHON) -m venv $(VENV)
	@# the distribution was called "studio" before "studio-media": an old install's entry
	@# points would register every built-in plugin twice
	$(BIN)/pip uninstall --quiet --yes studio 2>/dev/null || true
	rm -rf studio.egg-info
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

showcase: $(STAMP)
	$(BIN)/studio run pipelines/showcase.yaml

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs

# docs/augmentation.md's table and plot: does generated data help a few-shot classifier?
augmentation-experiment: $(STAMP)
	$(BIN)/python experiments/digits_augmentation.py --out docs

# samples/ holds outputs made by `studio run`, never edited by hand.
samples: $(STAMP)
	$(BIN)/studio run pipelines/showcase.yaml --out runs --quiet > .last-run
	cp "$$(cat .last-run)/sheet/image.png" samples/showcase-sheet.png
	cp "$$(cat .last-run)/drawn-sheet/image.png" samples/showcase-lines-drawn.png
	cp "$$(cat .last-run)/sheet-styled/image.png" samples/showcase-sheet-styled.png
	cp "$$(cat .last-run)/walk-large/image.png" samples/showcase-gan-walk.png
	cp "$$(cat .last-run)/tune/midi.mid" samples/showcase-tune.mid
	cp "$$(cat .last-run)/tune-audio/audio.wav" samples/showcase-tune.wav
	cp "$$(cat .last-run)/tune-variation/audio.wav" samples/showcase-tune-variation.wav
	$(BIN)/studio run pipelines/img2img.yaml --out runs --quiet > .last-run
	cp "$$(cat .last-run)/sheet/image.png" samples/img2img-sheet.png
	$(BIN)/studio run pipelines/inpaint.yaml --out runs --quiet > .last-run
	cp "$$(cat .last-run)/sheet/image.png" samples/inpaint-sheet.png
	$(BIN)/studio run pipelines/augment-digits.yaml --out runs --quiet > .last-run
	cp "$$(cat .last-run)/sheet-generated/image.png" samples/augment-digits-generated.png
	cp "$$(cat .last-run)/sheet-augmented/image.png" samples/augment-digits-classical.png
	cp "$$(cat .last-run)/score-generated/metrics.json" samples/augment-digits-generated-metrics.json
	$(BIN)/studio run pipelines/lora-sweep.yaml --out runs --quiet > .last-run
	cp "$$(cat .last-run)/sheet/image.png" samples/lora-sweep-sheet.png
	rm .last-run
