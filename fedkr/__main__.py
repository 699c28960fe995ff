from fedkr.cli import main

main()
