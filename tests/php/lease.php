<?php
// relay's safer extension of the dialect: getBatch with markAsReadInd = N leases the batch and
// answers its batchId; markRead with that batchId removes it. A batch never marked read comes
// back when its lease runs out.
//
//   php lease.php WSDL USER PASSWORD lease MAX       -> {"batchId": "...", "rows": [[...], ...]}
//   php lease.php WSDL USER PASSWORD markRead BATCH  -> the answer's result and resultData

[, $wsdl, $user, $password, $process, $arg] = $argv;
$client = new SoapClient($wsdl, ['cache_wsdl' => WSDL_CACHE_NONE, 'exceptions' => true]);
$login = $client->handleRequest(null, 'bus_facade_context', 'login',
    ['userName' => $user, 'password' => $password], null);
$contextId = $login['resultData']['bus_entity_context']['beanId'];

if ($process === 'lease') {
    // The parameters in entityData this time: the vendor's examples use both maps.
    $answer = $client->handleRequest($contextId, 'bus_facade_eventNotification', 'getBatch',
        ['notificationTypes' => ['OPEN', 'CLICK'], 'maxNotifications' => (int)$arg,
         'markAsReadInd' => 'N'], null);
    $batch = $answer['resultData']['bus_entity_eventNotificationBatch'];
    $rows = array_map(fn($line) => str_getcsv($line, ',', '"', ''),
        array_filter(explode("\n", base64_decode($batch['eventData']))));
    echo json_encode(['batchId' => $batch['batchId'] ?? null, 'rows' => array_values($rows)]), "\n";
} else {
    $answer = $client->handleRequest($contextId, 'bus_facade_eventNotification', 'markRead',
        null, ['batchId' => $arg]);
    echo json_encode($answer), "\n";
}
$client->handleRequest($contextId, 'bus_facade_context', 'logout', null, null);
