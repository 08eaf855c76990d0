"""`gdn-export`: a run's weights as one safetensors file, or as a folder that transformers loads
(AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)). See gdn.export.cli."""
