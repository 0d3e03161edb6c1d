from semaflow.cli import main

main()
