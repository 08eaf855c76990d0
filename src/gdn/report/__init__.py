"""`gdn-report`: compare the runs of a sweep (or an experiment) as a markdown table and PNG plots, from MLflow."""
