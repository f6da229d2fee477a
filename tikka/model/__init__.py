"""The classifier: checkpoint reading, runtime, explanations, labels, image decoding. No HTTP, no BentoML."""
