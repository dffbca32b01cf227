print("authzbench")
