# A regular file where rank 1's directory must go: rank 1 alone fails to create it.
file(WRITE "${WORK}/root/faulty/rank-1" "not a directory\n")
