from rerankd.cli import main

main()
