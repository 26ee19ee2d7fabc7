"""Networks (a factory over GluonCV), pretrained-weight staging, and model artifacts."""
