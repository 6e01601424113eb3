"""`python -m monailabel_app.evaluate`: the evaluation's command line (`monailabel_app.evaluation.cli`)."""

from monailabel_app.evaluation.cli import main

if __name__ == "__main__":
    main()
