"""`gdn-lm-eval`: lm-eval-harness's own command line with the `gdn` model registered (see lm_eval_adapter).

    gdn-lm-eval --model gdn --model_args run_dir=outputs/runs/<date>/<time> --tasks lambada_openai
"""


def main() -> None:
    try:
        import gdn.eval.lm_eval_adapter  # noqa: F401  (registers the `gdn` model)
    except ImportError as error:
        raise SystemExit(f"error: {error}; lm-eval is an optional extra: pip install -e \".[eval]\"") from None
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
