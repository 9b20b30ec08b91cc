from ramp_edge.cli import main

if __name__ == "__main__":
    main()
