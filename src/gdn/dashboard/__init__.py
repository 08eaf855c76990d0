"""What the MLflow UI shows: experiments that open on their runs, runs named after what they compare."""
