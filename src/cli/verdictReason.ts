import { VerifyCode, type VerifyResponse } from '../gen/keyward/v1/keyward';

/** Why Verify answered as it did, in the words of README's "KeyVerifierService.Verify" table. */
export function verdictReason(response: VerifyResponse): string {
  switch (response.code) {
    case VerifyCode.VERIFY_CODE_OK:
      return 'the key may proceed';
    case VerifyCode.VERIFY_CODE_MISSING_KEY:
      return 'no key was presented';
    case VerifyCode.VERIFY_CODE_INVALID_KEY:
      return 'the key is malformed, fails its checksum, or is not stored';
    case VerifyCode.VERIFY_CODE_REVOKED:
      return 'the key was revoked';
    case VerifyCode.VERIFY_CODE_DISABLED:
      return 'the key is disabled (keys enable restores it)';
    case VerifyCode.VERIFY_CODE_EXPIRED:
      return 'the key is past its expiry';
    case VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED:
      return 'the client address is outside the key\'s IP whitelist (or missing)';
    case VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE:
      return `the key lacks scope${response.missingScopes.length === 1 ? '' : 's'} ${response.missingScopes.join(', ')}`;
    default:
      return `unknown code ${response.code}`;
  }
}
