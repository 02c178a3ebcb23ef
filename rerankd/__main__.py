from rerankd.cli import main

if __name__ == "__main__":  # guarded: spawned children (the ONNX export) re-import this module
    main()
