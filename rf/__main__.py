from rf.cli import main

main()
