"""`python -m monailabel_app.evaluate`: the command line of `monailabel_app.evaluation.run`."""

from monailabel_app.evaluation.run import main

if __name__ == "__main__":
    main()
