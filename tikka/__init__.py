"""TikkaMasalAI: a food photo classifier served with BentoML."""
