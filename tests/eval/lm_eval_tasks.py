"""Local lm-eval tasks for the adapter tests: task YAMLs and jsonl data written into a folder, no download."""
import json
from pathlib import Path

CHOICE_DOCS = [
    {"question": "The delta rule", "choices": ["updates the state", "gate key", "memory value recall"], "answer": 0},
    {"question": "Keys and values", "choices": ["the model", "decay the chunk"], "answer": 1},
    {"question": "A layer head", "choices": ["norm", "token query state", "rule"], "answer": 2},
]
GENERATE_DOCS = [{"question": "The state gate", "target": "delta"}, {"question": "Memory", "target": "key"}]
ROLLING_DOCS = [{"text": "The gate decays the state."}, {"text": "Query key value recall memory."}]

TASKS = {
    "gdn_local_choice": ("choice.jsonl", CHOICE_DOCS, """
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
"""),
    "gdn_local_generate": ("generate.jsonl", GENERATE_DOCS, """
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{target}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
"""),
    "gdn_local_rolling": ("rolling.jsonl", ROLLING_DOCS, """
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
"""),
}


def write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data_file, docs, body) in TASKS.items():
        (folder / data_file).write_text("".join(json.dumps(d) + "\n" for d in docs))
        header = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                  f"    test: {folder / data_file}\ntest_split: test\n")
        (folder / f"{name}.yaml").write_text(header + body.lstrip())
    return folder
