"""`python -m monailabel_app.serve`: the command line of `monailabel_app.reasoning.endpoint_server`."""

from monailabel_app.reasoning.endpoint_server import main

if __name__ == "__main__":
    main()
